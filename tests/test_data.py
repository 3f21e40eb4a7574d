"""Tests of varlite.data: CIFAR-10 (small fakes in the official format, plus the real copy when present), Shapes,
ImageFolder, to_pm1 and load_dataset."""
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.http_server import PayloadServer
from varlite.data import (CIFAR10, CorruptDatasetError, DatasetError, DatasetNotFoundError, ImageFolder,
                          Shapes, download_cifar10, load_dataset, to_pm1)
from varlite.data.cifar10 import CLASSES, _safe_unpickle
from varlite.download import DownloadError

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_FILES = [f"data_batch_{k}" for k in range(1, 6)]
REAL_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar-10-python.tar.gz"


@pytest.fixture(autouse=True)
def private_home(monkeypatch, tmp_path):
    """Never look at (or create) the user's ~/.cache/varlite or their $VARLITE_CIFAR10."""
    monkeypatch.setenv("VARLITE_HOME", str(tmp_path / "varlite_home"))
    monkeypatch.delenv("VARLITE_CIFAR10", raising=False)


# ---------------------------------------------------------------- CIFAR-10

def fake_cifar_batches(per_batch=20):
    """The unpickled contents of a small CIFAR-10 in the official structure: {file name: dict}."""
    rng = np.random.default_rng(0)
    batches = {"batches.meta": {b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_cases_per_batch": per_batch,
                                b"num_vis": 3072}}
    for k, name in enumerate([*TRAIN_FILES, "test_batch"]):
        batches[name] = {b"batch_label": f"batch {k}".encode(), b"labels": [(i + k) % 10 for i in range(per_batch)],
                         b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
                         b"filenames": [f"img_{k}_{i}.png".encode() for i in range(per_batch)]}
    return batches


def write_fake_cifar(folder: Path, batches: dict, *, as_tarball: bool = True) -> Path:
    """Write ``batches`` as the official tarball (returned) or as an extracted cifar-10-batches-py/ (its parent
    ``folder`` is returned). A value of None leaves that file out; bytes are written as they are."""
    folder.mkdir(parents=True, exist_ok=True)
    extracted = folder / "cifar-10-batches-py"
    extracted.mkdir(exist_ok=True)
    for name, content in batches.items():
        if content is not None:
            raw = content if isinstance(content, bytes) else pickle.dumps(content, protocol=4)
            (extracted / name).write_bytes(raw)
    if not as_tarball:
        return folder
    tarball = folder / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(extracted, arcname="cifar-10-batches-py")
    for path in extracted.iterdir():
        path.unlink()
    extracted.rmdir()
    return tarball


def test_cifar10_reads_the_tarball_with_official_pixel_layout(tmp_path):
    batches = fake_cifar_batches()
    tarball = write_fake_cifar(tmp_path, batches)
    train = CIFAR10(tarball, split="train", check_counts=False)
    assert train.images_u8.shape == (100, 3, 32, 32) and train.images_u8.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.labels.tolist()[:3] == [0, 1, 2]
    assert train.classes == CIFAR_CLASSES and train.num_classes == 10 and train.image_size == 32 and len(train) == 100
    data = batches["data_batch_2"][b"data"]                       # images 20..39
    red_plane = data[3, :1024].reshape(32, 32)                    # red plane first, row-major
    blue_plane = data[3, 2048:].reshape(32, 32)
    assert np.array_equal(train.images_u8[23, 0].numpy(), red_plane)
    assert np.array_equal(train.images_u8[23, 2].numpy(), blue_plane)
    test = CIFAR10(tarball, split="test", check_counts=False)
    assert np.array_equal(test.images_u8.reshape(20, 3072).numpy(), batches["test_batch"][b"data"])
    img_3HW, label = test[5]
    assert img_3HW.dtype == torch.float32 and img_3HW.shape == (3, 32, 32) and label == 0 and isinstance(label, int)
    assert torch.equal(img_3HW, test.images_u8[5].float() / 255 * 2 - 1)


def test_cifar10_finds_tarball_or_extracted_folder_in_every_documented_place(tmp_path, monkeypatch):
    batches = fake_cifar_batches()
    tarball = write_fake_cifar(tmp_path / "tar", batches)
    extracted_parent = write_fake_cifar(tmp_path / "extracted", batches, as_tarball=False)
    expected = CIFAR10(tarball, split="test", check_counts=False).images_u8
    roots = [tarball, tarball.parent, extracted_parent, extracted_parent / "cifar-10-batches-py"]
    for root in roots:
        assert torch.equal(CIFAR10(root, split="test", check_counts=False).images_u8, expected), root
    monkeypatch.setenv("VARLITE_CIFAR10", str(extracted_parent))
    assert CIFAR10(split="test", check_counts=False).source == extracted_parent / "cifar-10-batches-py"
    monkeypatch.delenv("VARLITE_CIFAR10")
    write_fake_cifar(tmp_path / "varlite_home" / "cifar10", batches)
    assert CIFAR10(split="test", check_counts=False).source == tmp_path / "varlite_home/cifar10/cifar-10-python.tar.gz"


def test_cifar10_missing_says_where_it_looked_and_how_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("VARLITE_CIFAR10", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10(split="test")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and str(tmp_path / "varlite_home" / "cifar10") in message
    assert "python -m varlite download cifar10" in message and "download_cifar10()" in message
    with pytest.raises(DatasetNotFoundError, match="the root argument"):
        CIFAR10(tmp_path / "also_nowhere")


def test_cifar10_requires_the_official_counts_by_default(tmp_path):
    tarball = write_fake_cifar(tmp_path, fake_cifar_batches())
    with pytest.raises(CorruptDatasetError, match="has 20 images, the official CIFAR-10 has 10000.*check_counts=False"):
        CIFAR10(tarball, split="test")


def test_cifar10_names_a_missing_file(tmp_path):
    batches = fake_cifar_batches()
    batches["test_batch"] = None
    tarball = write_fake_cifar(tmp_path / "tar", batches)
    with pytest.raises(CorruptDatasetError, match="no member cifar-10-batches-py/test_batch"):
        CIFAR10(tarball, split="test", check_counts=False)
    folder = write_fake_cifar(tmp_path / "folder", batches, as_tarball=False)
    with pytest.raises(CorruptDatasetError, match="test_batch is missing"):
        CIFAR10(folder, split="test", check_counts=False)


def test_cifar10_truncated_tarball_is_reported(tmp_path):
    tarball = write_fake_cifar(tmp_path, fake_cifar_batches(per_batch=200))
    tarball.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(CorruptDatasetError, match="truncated or damaged") as info:
        CIFAR10(tarball, split="test", check_counts=False)
    assert str(tarball) in str(info.value)


@pytest.mark.parametrize("field, bad_value, message", [
    (b"data", np.zeros((20, 3000), np.uint8), r"data_batch_3: b'data' must be a numpy uint8 array of shape \(N, 3072"),
    (b"data", np.zeros((20, 3072), np.float32), r"data_batch_3: b'data' must be a numpy uint8 array"),
    (b"labels", [0] * 19, r"data_batch_3: b'labels' must be 20 integers"),
    (b"labels", [0] * 19 + [10], r"data_batch_3: label 10 of image 19 is out of range 0..9"),
])
def test_cifar10_wrong_structure_names_the_file_and_the_problem(tmp_path, field, bad_value, message):
    batches = fake_cifar_batches()
    batches["data_batch_3"][field] = bad_value
    tarball = write_fake_cifar(tmp_path, batches)
    with pytest.raises(CorruptDatasetError, match=message):
        CIFAR10(tarball, split="train", check_counts=False)


class RunsCodeWhenUnpickled:
    """A pickle payload of the kind an attacker would ship: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar10_refuses_a_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    batches = fake_cifar_batches()
    batches["test_batch"] = pickle.dumps({b"data": RunsCodeWhenUnpickled(marker), b"labels": []})
    folder = write_fake_cifar(tmp_path / "data", batches, as_tarball=False)
    with pytest.raises(CorruptDatasetError, match=r"test_batch asks to load posix\.system, which is refused"):
        CIFAR10(folder, split="test", check_counts=False)
    assert not marker.exists()


def test_safe_unpickler_accepts_arrays_written_by_numpy_1_and_2():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    written_by_numpy_2 = pickle.dumps(array, protocol=3)            # GLOBAL "numpy._core.multiarray _reconstruct"
    written_by_numpy_1 = written_by_numpy_2.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert written_by_numpy_1 != written_by_numpy_2
    for raw in (written_by_numpy_1, written_by_numpy_2):
        loaded = _safe_unpickle(io.BytesIO(raw), "test")
        assert loaded.dtype == np.uint8 and np.array_equal(loaded, array)


def test_download_cifar10_from_a_local_server_then_load_it(tmp_path):
    tarball = write_fake_cifar(tmp_path / "served", fake_cifar_batches())
    payload = tarball.read_bytes()
    server = PayloadServer(payload, "cifar-10-python.tar.gz").start()
    try:
        path = download_cifar10(url=server.url, md5=hashlib.md5(payload).hexdigest(), progress=False)
        assert path == tmp_path / "varlite_home" / "cifar10" / "cifar-10-python.tar.gz"
        assert path.read_bytes() == payload
        assert len(CIFAR10(split="train", check_counts=False)) == 100
        with pytest.raises(DownloadError, match="md5 mismatch"):
            download_cifar10(tmp_path / "elsewhere", url=server.url, progress=False)       # the official md5
    finally:
        server.stop()


@pytest.mark.skipif(not REAL_CIFAR.exists(), reason=f"the real CIFAR-10 copy is not at {REAL_CIFAR}")
def test_real_cifar10_test_split():
    test = CIFAR10(REAL_CIFAR, split="test")
    assert test.images_u8.shape == (10_000, 3, 32, 32)
    assert test.labels.bincount(minlength=10).tolist() == [1000] * 10
    assert test.classes == CIFAR_CLASSES == CLASSES


# ---------------------------------------------------------------- Shapes

def test_shapes_is_deterministic_by_seed_and_split():
    assert torch.equal(Shapes(n=50, seed=3).images_u8, Shapes(n=50, seed=3).images_u8)
    assert not torch.equal(Shapes(n=50, seed=3).images_u8, Shapes(n=50, seed=4).images_u8)
    assert not torch.equal(Shapes(n=50, split="train").images_u8, Shapes(n=50, split="test").images_u8)


def test_shapes_shapes_dtypes_and_range():
    shapes = Shapes(n=40, image_size=16)
    assert shapes.images_u8.shape == (40, 3, 16, 16) and shapes.images_u8.dtype == torch.uint8
    assert shapes.labels.dtype == torch.int64 and shapes.image_size == 16 and len(shapes) == 40
    assert shapes.num_classes == 10 and len(set(shapes.classes)) == 10
    img_3HW, label = shapes[7]
    assert img_3HW.dtype == torch.float32 and img_3HW.shape == (3, 16, 16) and label == 7
    assert img_3HW.min() >= -1 and img_3HW.max() <= 1
    assert len(Shapes(split="test")) == 1000


def test_shapes_classes_are_all_present_and_balanced():
    assert Shapes(n=200).labels.bincount().tolist() == [20] * 10
    assert Shapes(n=25).labels.bincount().tolist() == [3] * 5 + [2] * 5


def test_shapes_images_of_one_class_vary():
    same_class_u8 = Shapes(n=100).images_u8[::10].float()           # ten images of class 0
    assert (same_class_u8 - same_class_u8.mean(0)).abs().mean() > 10


def test_shapes_class_is_recoverable_at_4x4_by_nearest_centroid():
    """The coarse-scale claim: at 4 x 4 the class is already fixed (layout and colour)."""
    train, test = Shapes(n=2000, split="train"), Shapes(n=1000, split="test")
    train_BD = F.interpolate(train.images_u8.float(), size=4, mode="area").flatten(1)
    test_BD = F.interpolate(test.images_u8.float(), size=4, mode="area").flatten(1)
    centroids_KD = torch.stack([train_BD[train.labels == k].mean(0) for k in range(10)])
    predicted_B = torch.cdist(test_BD, centroids_KD).argmin(1)
    accuracy = (predicted_B == test.labels).float().mean().item()
    assert accuracy > 0.9, f"nearest-centroid accuracy at 4x4 is {accuracy:.3f}"


def test_shapes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        Shapes(n=10, split="val")
    with pytest.raises(ValueError, match="n >= 1"):
        Shapes(n=0)


# ---------------------------------------------------------------- ImageFolder

def test_image_folder_loads_modes_crops_and_resizes(tmp_path):
    (tmp_path / "b_dogs").mkdir()
    (tmp_path / "a_cats").mkdir()
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, :20] = (0, 0, 255)
    wide[:, 20:40] = (255, 0, 0)                                   # the red centre survives the centre crop
    wide[:, 40:] = (0, 0, 255)
    Image.fromarray(wide).save(tmp_path / "a_cats" / "wide.png")
    Image.new("L", (40, 40), 128).save(tmp_path / "a_cats" / "gray.JPG")
    transparent = Image.new("RGBA", (32, 32), (0, 0, 0, 0))       # fully transparent black -> white
    transparent.save(tmp_path / "b_dogs" / "transparent.png")
    Image.new("P", (10, 10), 0).save(tmp_path / "b_dogs" / "palette.gif")
    folder = ImageFolder(tmp_path, image_size=8)
    assert folder.classes == ["a_cats", "b_dogs"] and folder.num_classes == 2 and folder.image_size == 8
    assert folder.images_u8.shape == (4, 3, 8, 8) and folder.images_u8.dtype == torch.uint8
    assert folder.labels.tolist() == [0, 0, 1, 1]                  # files sorted by name: gray.JPG, wide.png, ...
    gray, wide_u8, palette, white = folder.images_u8
    assert (gray - 128).abs().max() <= 1
    assert (wide_u8[0] > 250).all() and (wide_u8[1:] < 5).all()
    assert (white == 255).all()
    assert palette.shape == (3, 8, 8)
    img_3HW, label = folder[1]
    assert img_3HW.dtype == torch.float32 and label == 0


def test_image_folder_skips_non_image_files_with_a_warning(tmp_path):
    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.png")
    (tmp_path / "only" / "notes.txt").write_text("not an image")
    (tmp_path / "only" / ".DS_Store").write_bytes(b"hidden")      # hidden files are ignored silently
    with pytest.warns(UserWarning, match="skipped 1 file.*notes.txt"):
        folder = ImageFolder(tmp_path)
    assert len(folder) == 1


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(DatasetError, match="no class sub-folders"):
        ImageFolder(tmp_path)
    (tmp_path / "full").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "full" / "a.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=f"class folder {tmp_path / 'empty'} holds no images"):
        ImageFolder(tmp_path)
    (tmp_path / "empty" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(CorruptDatasetError, match="broken.png"):
        ImageFolder(tmp_path)


# ---------------------------------------------------------------- to_pm1 and load_dataset

def test_to_pm1_is_the_official_normalisation():
    u8 = torch.arange(256, dtype=torch.uint8)
    x = u8.float().div(255)
    assert torch.equal(to_pm1(u8), x.add(x).add_(-1))
    assert to_pm1(u8)[0] == -1 and to_pm1(u8)[-1] == 1 and to_pm1(u8).dtype == torch.float32
    with pytest.raises(TypeError, match="uint8"):
        to_pm1(u8.float())


def test_load_dataset_builds_each_dataset_by_name(tmp_path):
    assert isinstance(load_dataset("shapes", "test", n=20), Shapes)
    tarball = write_fake_cifar(tmp_path / "cifar", fake_cifar_batches())
    assert len(load_dataset("cifar10", "test", root=tarball, check_counts=False)) == 20
    for split, colour in (("train", 10), ("test", 200)):
        (tmp_path / "images" / split / "cls").mkdir(parents=True)
        Image.new("RGB", (8, 8), (colour,) * 3).save(tmp_path / "images" / split / "cls" / "a.png")
    assert load_dataset("folder", "test", root=tmp_path / "images", image_size=8).images_u8.float().mean() == 200
    assert load_dataset("folder", "train", root=tmp_path / "images" / "train").classes == ["cls"]
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_dataset("mnist", "train")
    with pytest.raises(ValueError, match="takes no root"):
        load_dataset("shapes", "train", root=tmp_path)


def test_class_names_by_dataset_name():
    from varlite.data import class_names
    assert class_names("shapes")[:2] == ["red disc", "green square"] and len(class_names("shapes")) == 10
    assert class_names("cifar10") == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                      "truck"]
    assert class_names("folder") is None
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; expected one of shapes, cifar10, folder"):
        class_names("imagenet")

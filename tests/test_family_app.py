"""The walkthrough's official models: the picker's labels say what a depth costs, and a depth that the machine's
free memory cannot hold is refused in an error box instead of being loaded (AppTest)."""
import numpy as np
import pytest

pytest.importorskip("streamlit")
from app import loaders, registry  # noqa: E402
from tests.test_app import new_app, settings  # noqa: E402
from varlite import family, pretrained  # noqa: E402


@pytest.fixture
def d20_in_cache(tmp_path, monkeypatch):
    """Placeholder official vae and d20 files (random bytes: a refused model is never read) in an empty cache."""
    monkeypatch.setenv("VARLITE_HOME", str(tmp_path))
    monkeypatch.delenv("VARLITE_MODEL_DIRS", raising=False)
    rng = np.random.default_rng(0)
    for name in ("vae", "d20"):
        pretrained.official_path(name).write_bytes(rng.bytes(4096))
    loaders.reset_official()
    return tmp_path


def test_official_labels_give_size_memory_and_time():
    d36 = family.official_footprint(36)
    assert registry.official_label(36) == (f"Official VAR-d36 (ImageNet 512 px): 2,354 M parameters, needs "
                                           f"~{d36.memory_bytes / 2**30:.1f} GB, ~{d36.seconds_per_image:.0f} s per "
                                           f"image")


def test_a_depth_that_does_not_fit_is_refused_in_an_error_box(d20_in_cache, monkeypatch):
    monkeypatch.setattr(family, "available_memory_bytes", lambda: 2**30)
    labels = {c.key: c.label for c in registry.available_models()}
    assert labels["official:d20"] == registry.official_label(20)
    at = new_app(model_key="official:d20")
    assert not at.exception and settings(at).model_key == "official:d20"
    assert at.sidebar.selectbox(key="model_picker").value == "official:d20"
    error = at.error[0].value
    need = family.official_footprint(20).memory_bytes / 2**30
    assert "NotEnoughMemoryError" in error and f"VAR-d20 needs ~{need:.1f} GB" in error
    assert "only 1.0 GB free" in error and "smaller depth" not in error and "close other programs" in error


def test_a_depth_that_fits_goes_on_to_load(d20_in_cache, monkeypatch):
    """With the memory there the loader reads the files: here the placeholders, which it refuses as damaged."""
    monkeypatch.setattr(family, "available_memory_bytes", lambda: 2**40)
    at = new_app(model_key="official:d20")
    assert not at.exception
    error = at.error[0].value
    assert "NotEnoughMemoryError" not in error and "not a PyTorch checkpoint" in error

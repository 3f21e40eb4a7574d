"""Loading official-format checkpoints: config inference, strict layout checks, specific errors, download."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from varlite import download, pretrained
from varlite.cli import main as cli_main
from varlite.core.configs import get_preset, official_var
from varlite.pretrained import (CorruptCheckpointError, LayoutMismatchError, NotAStateDictError, UnknownLayoutError,
                                UnsafeCheckpointError, WrongModelError, expected_layout, infer_var_config,
                                infer_vqvae_config, load_var, load_vqvae, official_layouts, verify_layout)
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE

TINY_PN = (1, 2, 3, 4)


@pytest.fixture
def tiny_files(tmp_path, ref_state_dicts):
    vae_path, var_path = tmp_path / "vae.pth", tmp_path / "var.pth"
    torch.save(ref_state_dicts[0], vae_path)
    torch.save(ref_state_dicts[1], var_path)
    return vae_path, var_path


def test_loads_and_infers_the_config(tiny_files, ref_cases):
    vqvae = load_vqvae(tiny_files[0], patch_nums=TINY_PN)
    var = load_var(tiny_files[1], vqvae)
    preset = get_preset("tiny")
    assert vqvae.config == preset.vqvae
    assert var.config == preset.var
    assert not vqvae.training and not var.training
    assert var.source["verified"] and var.source["layout"].startswith("varlite")
    tokens = torch.cat(vqvae.img_to_idx(torch.from_numpy(ref_cases["input_img"])), dim=1)
    assert torch.equal(tokens, torch.from_numpy(ref_cases["idxBl_cat"]))


def test_a_loaded_decoder_keeps_the_channels_last_weights_its_activations_use(tiny_files):
    """Loading assigns the file's (contiguous) tensors; the decoder's conv weights must still be channels-last, as a
    freshly built decoder's are (else oneDNN converts every weight on every decode)."""
    decoder = load_vqvae(tiny_files[0], patch_nums=TINY_PN).decoder
    conv_weights = [m.weight for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(conv_weights) > 10
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights)
    built = VQVAE(get_preset("tiny").vqvae).decoder
    assert built.mid.block_1.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not built.mid.block_1.conv1.weight.is_contiguous()
    contiguous_sd = {key: value.contiguous() for key, value in built.state_dict().items()}
    built.load_state_dict(contiguous_sd, assign=True)          # any load, not only the loader's
    assert built.mid.block_1.conv1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("depth", [16, 20, 24, 30, 36])
def test_varlite_classes_have_exactly_the_official_layouts(depth):
    """Keys, order and shapes of the official state_dicts (from the official code) equal ours, d36 shared AdaLN too."""
    preset = get_preset(f"d{depth}")
    with torch.device("meta"):
        vqvae = VQVAE(preset.vqvae)
        var = VAR(preset.var, vqvae)
    layouts = official_layouts()
    var_name = next(n for n in layouts if n.startswith(f"var_d{depth}"))
    assert expected_layout(var) == [[r[0], tuple(r[1])] for r in layouts[var_name]["tensors"]]
    assert expected_layout(vqvae) == [[r[0], tuple(r[1])] for r in layouts["vae_ch160v4096z32"]["tensors"]]


@pytest.mark.parametrize("depth", [16, 36])
def test_config_is_inferred_from_official_shapes(depth):
    layouts = official_layouts()
    rows = layouts[next(n for n in layouts if n.startswith(f"var_d{depth}"))]["tensors"]
    sd = {k: torch.empty(shape, device="meta") for k, shape, _ in rows}
    want = official_var(depth)
    sd["lvl_1L"] = torch.cat([torch.full((p * p,), i) for i, p in enumerate(want.patch_nums)]).view(1, -1)
    got = infer_var_config(sd)
    assert got == type(want)(**{**want.__dict__, "drop_path_rate": 0.0})   # drop-path is training-only, not stored
    vae_sd = {k: torch.empty(shape, device="meta") for k, shape, _ in layouts["vae_ch160v4096z32"]["tensors"]}
    assert infer_vqvae_config(vae_sd) == get_preset("d16").vqvae


def test_vae_given_as_var_and_the_reverse(tiny_files):
    vqvae = load_vqvae(tiny_files[0], patch_nums=TINY_PN)
    with pytest.raises(WrongModelError, match="is a VQVAE .* load it with load_vqvae"):
        load_var(tiny_files[0], vqvae)
    with pytest.raises(WrongModelError, match="is a VAR transformer checkpoint"):
        load_vqvae(tiny_files[1])


def test_mismatched_patch_nums_say_how_to_fix(tiny_files):
    vqvae = load_vqvae(tiny_files[0])      # official patch_nums by default
    with pytest.raises(pretrained.CheckpointError, match=r"load_vqvae\(path, patch_nums=\(1, 2, 3, 4\)\)"):
        load_var(tiny_files[1], vqvae)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "x.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(NotAStateDictError, match="holds a list"):
        load_vqvae(path)
    torch.save({"model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(NotAStateDictError, match=r"keys \['model'\].*state_dict\(\)"):
        load_vqvae(path)


def test_truncated_and_garbage_files(tmp_path, tiny_files):
    data = tiny_files[0].read_bytes()
    cut = tmp_path / "cut.pth"
    for size in (len(data) // 2, len(data) - 1, 10):
        cut.write_bytes(data[:size])
        with pytest.raises(CorruptCheckpointError, match="is a zip archive that is truncated or damaged .*"
                                                         "delete it and download \\(or save\\) it again"):
            load_vqvae(cut)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"secret-password-line\n")
    with pytest.raises(CorruptCheckpointError, match="not a PyTorch checkpoint: it is neither a zip archive .* nor "
                                                     "a legacy torch pickle") as info:
        load_vqvae(junk)
    assert "secr" not in str(info.value) and "b'" not in str(info.value)     # no file bytes in the message
    junk.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match=r"is empty \(0 bytes\)"):
        load_vqvae(junk)
    with pytest.raises(FileNotFoundError, match="python -m varlite download"):
        load_vqvae(tmp_path / "missing.pth")


def test_a_zip_with_damaged_contents_is_damaged(tmp_path, tiny_files):
    data = bytearray(tiny_files[0].read_bytes())
    data[100:300] = bytes(200)      # inside the first member; the zip directory at the end is intact
    path = tmp_path / "flipped.pth"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=r"is a damaged zip archive: its contents cannot be read "
                                                     r"\(\w+\); delete it"):
        load_vqvae(path)


@pytest.mark.parametrize("blob, unpickler_error", [
    (b"\x80\x02.", "IndexError"), (b"\x80\x02h\x05.", "KeyError"), (b"\x80\x02", "EOFError"),
    (b"\x80\x02X\x01\x00\x00\x00\xff.", "UnicodeDecodeError"), (b"\x80\x02\xfa", "UnpicklingError")])
def test_every_unpickler_failure_is_the_same_damaged_file_error(tmp_path, blob, unpickler_error):
    path = tmp_path / "bad.pth"
    path.write_bytes(blob)
    with pytest.raises(CorruptCheckpointError, match=f"is a damaged legacy torch pickle: its contents cannot be "
                                                     f"read \\({unpickler_error}\\); delete it"):
        load_vqvae(path)


@pytest.mark.parametrize("seed", range(12))
def test_garbage_after_a_pickle_opcode_is_damaged_never_a_crash(tmp_path, seed):
    """b"\\x80" + random bytes made the unpickler raise IndexError / KeyError / EOFError / UnicodeDecodeError."""
    g = torch.Generator().manual_seed(seed)
    n = (1, 5, 50, 500)[seed % 4]
    path = tmp_path / "g.pth"
    path.write_bytes(b"\x80" + bytes(torch.randint(0, 256, (n,), generator=g).tolist()))
    with pytest.raises(pretrained.CheckpointError) as info:
        load_vqvae(path)
    # random bytes may spell an import (refused as unsafe), else they are a damaged pickle; nothing else
    assert type(info.value) in (CorruptCheckpointError, UnsafeCheckpointError)
    if type(info.value) is CorruptCheckpointError:
        assert "is a damaged legacy torch pickle: its contents cannot be read" in str(info.value)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_that_runs_code_is_refused_without_running(tmp_path, legacy):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    if legacy:
        path.write_bytes(pickle.dumps({"w": _RunsCode(marker)}, protocol=2))
    else:
        torch.save({"w": _RunsCode(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="could run code .*nothing was executed"):
        load_vqvae(path)
    assert not marker.exists()


def test_unknown_layout(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(UnknownLayoutError, match=r"not a VQVAE state_dict .*'fc.weight'"):
        load_vqvae(path)
    with pytest.raises(UnknownLayoutError, match="not a VAR state_dict"):
        load_var(path, VQVAE(get_preset("tiny").vqvae))


def test_missing_unexpected_and_misshapen_keys(tmp_path, ref_state_dicts):
    vqvae = VQVAE(get_preset("tiny").vqvae)
    path = tmp_path / "var.pth"
    sd = dict(ref_state_dicts[1])
    del sd["head.bias"]
    sd["blocks.0.attn.extra"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(LayoutMismatchError, match=r"1 missing key\(s\) \['head.bias'\].*1 unexpected key\(s\) \['blocks.0.attn.extra'\]"):
        load_var(path, vqvae)
    sd = dict(ref_state_dicts[1])
    sd["blocks.1.ffn.fc2.bias"] = torch.zeros(129)
    torch.save(sd, path)
    with pytest.raises(LayoutMismatchError, match=r"'blocks.1.ffn.fc2.bias' has shape \(129,\), expected \(128,\)"):
        load_var(path, vqvae)


def test_official_layout_check_names_keys(ref_state_dicts):
    rows = official_layouts()["var_d16"]["tensors"]
    sd = {k: torch.empty(shape, device="meta") for k, shape, _ in rows}
    verify_layout(sd, rows, "d16")
    sd["head.weight"] = torch.empty(4096, 1000, device="meta")
    with pytest.raises(LayoutMismatchError, match=r"'head.weight' has shape \(4096, 1000\), expected \(4096, 1024\)"):
        verify_layout(sd, rows, "d16")


def test_ema_vocab_hit_of_any_shape_is_accepted(tmp_path, ref_state_dicts):
    sd = dict(ref_state_dicts[0])
    sd["quantize.ema_vocab_hit_SV"] = torch.ones(10, 64)   # e.g. trained with 10 scales
    path = tmp_path / "vae.pth"
    torch.save(sd, path)
    vqvae = load_vqvae(path, patch_nums=TINY_PN)
    assert vqvae.quantize.ema_vocab_hit_SV.shape == (4, 64)


# ------------------------------------------------------------------------------------------------ download
# Official downloads through huggingface_hub: tests/test_hf_download.py.


def test_cli_rejects_unknown_names(capsys):
    assert cli_main(["download", "d17"]) == 2
    assert "unknown name 'd17'" in capsys.readouterr().err


def test_cli_downloads_cifar10_into_the_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(download, "RETRY_PAUSE_S", 0.0)
    code = cli_main(["download", "cifar10", "--quiet", "--cache-dir", str(tmp_path),
                     "--cifar-url", "http://127.0.0.1:9/cifar-10-python.tar.gz"])
    assert code == 1
    err = capsys.readouterr().err
    assert "offline" in err and str(tmp_path / "cifar10" / "cifar-10-python.tar.gz") in err


def test_main_cli_offers_the_training_commands(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    out = capsys.readouterr().out
    for command in ("download", "parity", "info", "train-tokenizer", "train-var", "evaluate"):
        assert command in out


# ------------------------------------------------------------------------------------------------ pairs, user paths
@pytest.fixture(scope="module")
def shapes_pair_files(tmp_path_factory):
    """The built-in shapes model saved as two plain state_dicts: a valid pair in a non-official config."""
    from varlite.builtin import load_builtin
    vqvae, var = load_builtin("shapes")
    folder = tmp_path_factory.mktemp("shapes_pair")
    torch.save(vqvae.state_dict(), folder / "vae.pth")
    torch.save(var.state_dict(), folder / "var.pth")
    return folder / "vae.pth", folder / "var.pth", vqvae.config, var.config


def test_a_non_official_pair_loads_with_load_pair(shapes_pair_files):
    vae_path, var_path, vq_config, var_config = shapes_pair_files
    vqvae, var = pretrained.load_pair(vae_path, var_path)
    assert vqvae.config == vq_config and var.config == var_config
    assert vqvae.config.patch_nums == (1, 2, 3, 4, 5, 6, 8)
    assert var.source == {"what": str(var_path), "layout": "varlite (non-official config)", "verified": True}
    with pytest.raises(WrongModelError, match="var.pth is a VAR transformer checkpoint"):
        pretrained.load_pair(var_path, var_path)
    with pytest.raises(WrongModelError, match="vae.pth is a VQVAE"):
        pretrained.load_pair(var_path, vae_path)


def test_a_non_official_pair_loaded_one_by_one_says_what_is_supported(shapes_pair_files):
    vae_path, var_path, _, _ = shapes_pair_files
    vqvae = load_vqvae(vae_path)            # official patch_nums by default: not this VAR's
    with pytest.raises(pretrained.CheckpointError) as info:
        load_var(var_path, vqvae)
    text = str(info.value)
    assert "uses patch_nums (1, 2, 3, 4, 5, 6, 8) but the VQVAE was built for (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)" in text
    assert "Supported: the official files (vae_ch160v4096z32.pth with var_d16/d20/d24/d30.pth)" in text
    assert "Here: load_pair(vae_path, var_path)" in text


def test_resolve_model_path_accepts_only_the_model_folders(tmp_path, monkeypatch):
    home, extra, outside = tmp_path / "home", tmp_path / "extra", tmp_path / "outside"
    for folder in (home, extra, outside):
        folder.mkdir()
    (home / "var_d16.pth").write_bytes(b"x")
    (outside / "secret.pth").write_bytes(b"x")
    (home / "link.pth").symlink_to(outside / "secret.pth")
    monkeypatch.setenv("VARLITE_HOME", str(home))
    monkeypatch.setenv("VARLITE_MODEL_DIRS", str(extra))
    resolve = pretrained.resolve_model_path
    assert resolve("var_d16.pth") == (home / "var_d16.pth").resolve()          # relative: inside the cache
    assert resolve(home / "var_d16.pth") == (home / "var_d16.pth").resolve()
    assert resolve(extra / "new.pth") == (extra / "new.pth").resolve()         # inside, need not exist yet
    assert resolve(outside / "a.pth", extra_folders=[outside]) == (outside / "a.pth").resolve()
    messages = []
    for typed in (outside / "secret.pth", outside / "missing.pth", "/etc/passwd", "../outside/secret.pth",
                  home / ".." / "outside" / "secret.pth", "link.pth", ""):
        with pytest.raises(pretrained.NotInModelFolderError, match="is not in the model folder") as info:
            resolve(typed)
        messages.append(str(info.value).replace(repr(str(typed)), "PATH"))
    assert len(set(messages)) == 1        # existing or not, file or link: the same words
    assert str(home.resolve()) in messages[0] and "VARLITE_MODEL_DIRS" in messages[0]


def test_load_official_reads_the_cache_and_takes_a_device(tmp_path, tiny_files):
    """Tiny reference files under the official names stand in for the 1.7 GB ones (checked against varlite's own
    layout for their config, as any non-official config)."""
    (tmp_path / "vae_ch160v4096z32.pth").write_bytes(tiny_files[0].read_bytes())
    (tmp_path / "var_d16.pth").write_bytes(tiny_files[1].read_bytes())
    vqvae, var = pretrained.load_official(16, tmp_path, device="cpu")
    assert var.config == get_preset("tiny").var and vqvae.config == get_preset("tiny").vqvae
    assert next(var.parameters()).device.type == "cpu" and var.vqvae is vqvae
    with pytest.raises(ValueError, match="there is no official VAR-d17; the official depths are 16, 20, 24, 30, 36"):
        pretrained.load_official(17, tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*var_d20.pth"):
        pretrained.load_official(20, tmp_path)
    if torch.cuda.is_available():
        assert next(pretrained.load_official(16, tmp_path)[1].parameters()).device.type == "cuda"   # auto
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            pretrained.load_official(16, tmp_path, device="cuda")


def test_one_checkpoint_error_for_every_loader(tmp_path):
    """Official files and training checkpoints raise the same CheckpointError (a ValueError), read by one reader."""
    from varlite import safe_io
    from varlite.train import checkpoint
    assert pretrained.CheckpointError is safe_io.CheckpointError and issubclass(safe_io.CheckpointError, ValueError)
    assert pretrained.CorruptCheckpointError is safe_io.CorruptCheckpointError
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"\x80\x02.")                  # the unpickler's IndexError
    with pytest.raises(CorruptCheckpointError, match=r"is a damaged legacy torch pickle: its contents cannot be read "
                                                     r"\(IndexError\); the checkpoint cannot be read: delete it and "
                                                     r"retrain, or resume from an older copy"):
        checkpoint.load_checkpoint(path)
    torch.save({"w": _RunsCode(tmp_path / "pwned")}, path)
    with pytest.raises(UnsafeCheckpointError, match="nothing was executed"):
        checkpoint.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()

"""A train-var checkpoint from anyone (a run folder, the command line, an upload to the walkthrough): checked against
the preset it names before anything is built (``varlite.preset_weights``, through ``load_var_run``), its optimizer
state never read, and no text of the file quoted back."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_train import folder, micro_preset_one_thread, tokenizer_run, var_run  # noqa: F401 (fixtures)
from varlite import preset_weights
from varlite.core.configs import get_preset
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE
from varlite.safe_io import CheckpointError
from varlite.train.checkpoint import FORMAT, VERSION, load_checkpoint
from varlite.train.transformer import load_var_run

ROOT = Path(__file__).resolve().parent.parent


def lying_checkpoint(preset: str, vqvae: dict, model: dict, optimizer: dict | None = None) -> dict:
    """A well-formed train-var checkpoint (every entry the trainer writes is there) naming ``preset`` and holding
    the state dicts ``vqvae`` and ``model``, which need not fit it."""
    return {"format": FORMAT, "version": VERSION, "kind": "var", "step": 100,
            "configs": {"train": {"preset": preset, "dataset": "shapes", "sample_cfg": 1.5}}, "model": model,
            "vqvae": vqvae, "optimizer": optimizer or {"state": {}, "param_groups": []}, "rng": [], "world": 1,
            "extra": {}, "log_window": []}


def preset_states(preset: str, tensor) -> tuple[dict, dict]:
    """(vqvae, var) state dicts with every name and shape of ``preset``'s models, each tensor ``tensor(meta
    tensor)`` in the preset's dtype."""
    p = get_preset(preset)
    with torch.device("meta"):
        vqvae = VQVAE(p.vqvae)
        var = VAR(p.var, vqvae)
    return tuple({k: tensor(v).to(v.dtype) for k, v in m.state_dict().items()} for m in (vqvae, var))


def crafted_checkpoint(preset: str, tensor=lambda t: torch.zeros(1).expand(t.shape)) -> bytes:
    """A train-var checkpoint naming ``preset`` holding ``preset_states``: by default one stored zero repeated (a
    stride-0 view) per tensor, so a few KB declare a whole model."""
    buf = io.BytesIO()
    torch.save(lying_checkpoint(preset, *preset_states(preset, tensor)), buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ bounded work
PROBE = """
import re, sys, time
from pathlib import Path
from varlite.train.transformer import load_var_run

def peak_mib():   # VmHWM: this process's own peak (ru_maxrss would start at the forking pytest's peak)
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1)) / 1024

before = peak_mib()
for path in sys.argv[1:]:
    start = time.monotonic()
    try:
        load_var_run(Path(path))
        outcome = "LOADED"
    except Exception as err:
        outcome = f"REFUSED {type(err).__name__} {err}"
    print(f"{Path(path).name} SECONDS {time.monotonic() - start:.2f} {outcome}")
print(f"GROWN {peak_mib() - before:.0f}")
"""


def test_crafted_checkpoints_are_refused_before_anything_is_built_and_the_optimizer_is_never_read(tmp_path):
    """1.5 KB naming d16 once made the loader build the full 2 GB model before any check; now the file's tensors are
    checked on the meta device first. The tensors are memory-mapped: a checkpoint whose optimizer state is 256 MiB
    loads its 8 MB model without reading the optimizer's. All in one fresh process, whose peak memory (which only
    grows) bounds every one of these loads."""
    shapes = get_preset("shapes")
    vqvae = VQVAE(shapes.vqvae)
    big_optimizer = {"state": {0: {"exp_avg": torch.ones(64 * 2**20)}}, "param_groups": []}
    expected = {"d16_empty.pt": "REFUSED CheckpointError .* vqvae tensors missing",
                "d16_stride0.pt": "REFUSED CheckpointError .* repeats fewer stored values than it has",
                "d30_stride0.pt": "REFUSED CheckpointError .* repeats fewer stored values than it has",
                "shapes_big_optimizer.pt": "LOADED"}
    torch.save(lying_checkpoint("d16", vqvae={}, model={}), tmp_path / "d16_empty.pt")
    (tmp_path / "d16_stride0.pt").write_bytes(crafted_checkpoint("d16"))
    (tmp_path / "d30_stride0.pt").write_bytes(crafted_checkpoint("d30"))
    torch.save(lying_checkpoint("shapes", vqvae.state_dict(), VAR(shapes.var, vqvae).state_dict(), big_optimizer),
               tmp_path / "shapes_big_optimizer.pt")
    assert all((tmp_path / name).stat().st_size < 2**20 for name in expected if name.startswith("d"))
    out = subprocess.run([sys.executable, "-c", PROBE, *(str(tmp_path / name) for name in expected)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300).stdout
    for name, outcome in expected.items():
        assert re.search(rf"^{re.escape(name)} SECONDS \S+ {outcome}", out, re.MULTILINE), out
    assert all(float(s) < 20 for s in re.findall(r"SECONDS (\S+)", out)), out
    assert float(re.search(r"GROWN (\S+)", out).group(1)) < 150, out      # d16 alone is 1,601 MiB of float32


# ------------------------------------------------------------------------------------------------ what does not fit
def test_wrong_shapes_dtypes_and_missing_bytes_are_named_before_building(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(crafted_checkpoint("shapes", lambda t: torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"does not fit preset 'shapes': vqvae tensor `\S+` is "
                                              r"torch.float32 \(2,\), the preset's is"):
        load_var_run(path)
    path.write_bytes(crafted_checkpoint("shapes", lambda t: torch.zeros(t.shape)))
    with pytest.raises(CheckpointError, match=r"c\.pt: the buffer `lvl_1L` is not the one of its scales"):
        load_var_run(path)           # right shapes, but not the preset's buffer
    vqvae_state, var_state = preset_states("shapes", lambda t: torch.zeros(t.shape))
    double = dict(var_state, pos_1LC=var_state["pos_1LC"].double())
    with pytest.raises(CheckpointError, match=r"var tensor `pos_1LC` is torch\.float64"):
        preset_weights.check_against_preset({"vqvae": vqvae_state, "var": double}, "shapes", 10**9, "x")
    with pytest.raises(CheckpointError, match=r"declares 8\.\d MB of 'shapes' weights but the file has only"):
        preset_weights.check_against_preset({"vqvae": vqvae_state, "var": var_state}, "shapes", 1000, "x")
    with pytest.raises(CheckpointError, match="x names an unknown preset; this varlite has .*d16"):
        preset_weights.check_against_preset({"vqvae": {}, "var": {}}, "d99", 10**9, "x")
    with pytest.raises(CheckpointError, match="x names no preset"):
        preset_weights.check_against_preset({"vqvae": {}, "var": {}}, None, 10**9, "x")


def test_a_checkpoint_needing_more_memory_than_the_machine_has_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    path.write_bytes(crafted_checkpoint("shapes", lambda t: torch.zeros(t.shape)))
    monkeypatch.setattr(preset_weights, "available_memory_bytes", lambda: 2**20)
    with pytest.raises(CheckpointError, match=r"needs 0\.01 GB of memory .* this machine has 0\.00 GB free"):
        load_var_run(path)


def test_messages_quote_nothing_read_from_the_file():
    """A preset name or tensor names of any length and content in the file never reach the message."""
    junk = "<b>junk</b>" * 10_000
    vqvae_state, var_state = preset_states("shapes", lambda t: torch.zeros(t.shape))
    for preset, states in ((junk, {"vqvae": vqvae_state, "var": var_state}),
                           ("shapes", {"vqvae": {**vqvae_state, junk: torch.zeros(1)}, "var": var_state})):
        with pytest.raises(CheckpointError) as info:
            preset_weights.check_against_preset(states, preset, 10**9, "c.pt")
        assert "junk" not in str(info.value) and len(str(info.value)) < 400, str(info.value)[:400]
    with pytest.raises(CheckpointError, match=r"does not fit preset 'shapes': 1 vqvae tensors of names the "
                                              r"preset does not have$"):
        preset_weights.check_against_preset({"vqvae": {**vqvae_state, junk: torch.zeros(1)}, "var": var_state},
                                            "shapes", 10**9, "c.pt")


# ------------------------------------------------------------------------------------------------ what fits
def test_a_run_loads_as_the_model_built_plainly_from_its_checkpoint(var_run):
    """Built on the meta device from the file's own tensors: the same weights and the same generation as a model
    built the ordinary way and given the checkpoint's state dicts."""
    var, configs = load_var_run(var_run)
    ckpt = load_checkpoint(var_run / "checkpoint.pt", "var")
    preset = get_preset(configs["train"]["preset"])
    ref = VAR(preset.var, VQVAE(preset.vqvae))
    ref.vqvae.load_state_dict(ckpt["vqvae"])
    ref.load_state_dict(ckpt["model"])
    ref.eval()
    assert configs == ckpt["configs"] and not var.training and not var.vqvae.training
    for a, b in ((var, ref), (var.vqvae, ref.vqvae)):
        assert not any(t.is_meta for t in a.state_dict().values())
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with torch.inference_mode():
        images = [m.generate([1, 3], cfg=1.5, top_k=5, seed=2) for m in (var, ref)]
    assert torch.equal(*images)

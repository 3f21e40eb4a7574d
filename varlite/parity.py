"""Parity with the official implementation: ``python -m varlite parity DIR`` (``make parity``).

DIR is a reference set made with the official FoundationVision/VAR code (format of ``varlite/reference/upstream_tiny``:
``config.json`` with the constructor and call arguments and the state_dict layouts, ``cases.npz`` with the inputs
and every output, optionally ``vae.pth`` / ``var.pth`` and ``meta.json``). Weights come from the .pth files when
present, else they are regenerated from the layouts by the synthetic rule (``varlite.synthetic``) and, when
``meta.json`` records them, checked against the recorded sha256 of every tensor.

Then every array the checker knows is recomputed with varlite and compared: tokens exactly, float32 arrays to
``atol=1e-4``, ``*_f16`` arrays (float16 copies) to ``atol=2e-3`` after casting ours to float16. One row per
check (name, max abs diff, tolerance, pass); keys it does not know are listed as not checked. Exit code 0 iff
every check passes. Works for full-size official configs on a CPU (the models are built on the meta device and
take the loaded tensors without copying).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .core.configs import VARConfig, VQVAEConfig
from .pretrained import load_state_dict, var_from_state_dict, vqvae_from_state_dict
from .synthetic import synthetic_state_dict

FLOAT_ATOL, F16_ATOL = 1e-4, 2e-3


# what every reference set's config.json holds (the calls greedy_call / sampled_call are optional)
REQUIRED_CONFIG_KEYS = ("weights_seed", "image_size", "batch", "input_image", "vae_constructor_args",
                        "var_constructor_args", "models")


class ReferenceSetError(ValueError):
    """A reference set folder is missing, incomplete, or lacks an array the checker needs."""


@dataclass
class Check:
    name: str
    max_abs_diff: float
    tolerance: float       # 0 for exact comparisons
    passed: bool
    note: str = ""


def make_images_u8(B: int, H: int, img_seed: int) -> torch.Tensor:
    """The reference sets' input images: a smooth float64 pattern plus seeded Gaussian noise, rounded to uint8."""
    y = torch.arange(H, dtype=torch.float64).view(1, 1, H, 1) / H
    x = torch.arange(H, dtype=torch.float64).view(1, 1, 1, H) / H
    b = torch.arange(B, dtype=torch.float64).view(B, 1, 1, 1)
    c = torch.arange(3, dtype=torch.float64).view(1, 3, 1, 1)
    pattern = (127.5 - 40.0 * (b - 0.5)
               + 70.0 * torch.sin(2 * math.pi * ((1.0 + b) * x + (0.5 + 0.5 * c) * y) + 1.3 * c + 0.7 * b)
               + 35.0 * torch.cos(2 * math.pi * (2.0 + c) * x * y + b))
    noise = torch.randn(B, 3, H, H, generator=torch.Generator().manual_seed(img_seed), dtype=torch.float64) * 12.0
    return (pattern + noise).round().clamp(0, 255).to(torch.uint8)


def u8_to_pm1(u8: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [-1, 1], exactly as upstream (ToTensor, then x + x - 1)."""
    x = u8.float().div(255)
    return x.add(x).add_(-1)


def configs_from_reference(cfg: dict) -> tuple[VQVAEConfig, VARConfig]:
    """Map the official constructor arguments onto varlite's configs (official VQVAE: ch_mult (1,1,2,2,4))."""
    try:
        return _configs_from_arguments(cfg["vae_constructor_args"], cfg["var_constructor_args"])
    except KeyError as err:
        raise ReferenceSetError(f"the reference set's config.json lacks the constructor argument {err}; regenerate "
                                f"the reference set") from None


def _configs_from_arguments(a: dict, b: dict) -> tuple[VQVAEConfig, VARConfig]:
    if not b.get("attn_l2_norm", True) or a.get("using_znorm", False):
        raise ValueError("varlite implements the official models: attn_l2_norm=True and using_znorm=False")
    vq = VQVAEConfig(vocab_size=a["vocab_size"], z_channels=a["z_channels"], ch=a["ch"], dropout=a["dropout"],
                     beta=a["beta"], quant_conv_ks=a["quant_conv_ks"], quant_resi=a["quant_resi"],
                     share_quant_resi=a["share_quant_resi"], patch_nums=tuple(a["v_patch_nums"]))
    var = VARConfig(vocab_size=a["vocab_size"], z_channels=a["z_channels"], patch_nums=tuple(b["patch_nums"]),
                    num_classes=b["num_classes"], depth=b["depth"], embed_dim=b["embed_dim"],
                    num_heads=b["num_heads"], mlp_ratio=b["mlp_ratio"], norm_eps=b["norm_eps"],
                    shared_aln=b["shared_aln"])
    return vq, var


class ParityRun:
    """Loads one reference set, runs varlite on its inputs and collects ``Check`` rows."""

    def __init__(self, ref_dir: str | Path):
        self.dir = Path(ref_dir)
        if not self.dir.is_dir():
            raise ReferenceSetError(f"reference set folder {self.dir} does not exist; pass a folder made by the "
                                    f"reference generator, e.g. varlite/reference/upstream_tiny")
        for name in ("config.json", "cases.npz"):
            if not (self.dir / name).is_file():
                raise ReferenceSetError(
                    f"{self.dir} is not a reference set: it has no {name}. Pass a folder made by the reference "
                    f"generator (config.json, cases.npz, optional vae.pth / var.pth / meta.json), e.g. "
                    f"varlite/reference/upstream_tiny")
        try:
            self.cfg = json.loads((self.dir / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ReferenceSetError(f"{self.dir / 'config.json'} is not valid JSON ({type(err).__name__}); "
                                    f"regenerate the reference set") from None
        if not isinstance(self.cfg, dict):
            raise ReferenceSetError(f"{self.dir / 'config.json'} holds no JSON object; regenerate the reference set")
        missing = [key for key in REQUIRED_CONFIG_KEYS if key not in self.cfg]
        if missing:
            raise ReferenceSetError(f"{self.dir / 'config.json'} lacks {', '.join(missing)}: it is not a reference "
                                    f"set's config (expected the keys {', '.join(REQUIRED_CONFIG_KEYS)}); "
                                    f"regenerate the reference set")
        meta_path = self.dir / "meta.json"
        self.meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        self.cases = dict(np.load(self.dir / "cases.npz"))
        self.checks: list[Check] = []
        self.used: set[str] = set()

    # -------------------------------------------------------------------------------- comparisons
    def compare(self, key: str, ours: torch.Tensor) -> None:
        """Compare our tensor with ``key`` (or its ``key_f16`` copy) if the set has it."""
        ours = ours.detach().cpu()
        for ref_key, f16 in ((key, False), (key + "_f16", True)):
            if ref_key not in self.cases:
                continue
            self.used.add(ref_key)
            ref = torch.from_numpy(self.cases[ref_key])
            if tuple(ref.shape) != tuple(ours.shape):
                self.checks.append(Check(ref_key, math.inf, 0.0, False, f"shape {tuple(ours.shape)} != {tuple(ref.shape)}"))
            elif not ref.is_floating_point():
                mismatches = int((ref != ours).sum())
                self.checks.append(Check(ref_key, float((ref - ours).abs().max()) if ref.numel() else 0.0, 0.0,
                                         mismatches == 0, f"{mismatches} of {ref.numel()} differ" if mismatches else ""))
            else:
                ours_c = ours.to(torch.float16).float() if f16 else ours.float()
                diff = float((ref.float() - ours_c).abs().max()) if ref.numel() else 0.0
                tol = F16_ATOL if f16 else FLOAT_ATOL
                self.checks.append(Check(ref_key, diff, tol, diff <= tol))

    def compare_logit_summaries(self, prefix: str, logits_BLV: torch.Tensor) -> None:
        """The compact forms of big logit arrays: top-5 values/indices, first 10 positions, logsumexp, mean, std."""
        top_v, top_i = logits_BLV.topk(5, dim=-1, sorted=True)
        self.compare(prefix + ".top5_values", top_v)
        self.compare(prefix + ".top5_indices", top_i)
        self.compare(prefix + ".first10", logits_BLV[:, :10])
        self.compare(prefix + ".logsumexp", logits_BLV.logsumexp(-1))
        self.compare(prefix + ".mean", logits_BLV.mean(-1))
        self.compare(prefix + ".std", logits_BLV.std(-1))

    # -------------------------------------------------------------------------------- weights
    def state_dicts(self) -> tuple[dict, dict, str]:
        models = self.cfg["models"]
        sds, sources = [], []
        for name in ("vae", "var"):
            path = self.dir / f"{name}.pth"
            if path.exists():
                sds.append(load_state_dict(path))
                sources.append(f"{name}.pth")
            elif "state_dict" not in models.get(name, {}):
                raise ReferenceSetError(f"{self.dir} has no {name}.pth and its config.json no state_dict layout for "
                                        f"{name} (models.{name}.state_dict) to regenerate it from; regenerate the "
                                        f"reference set")
            else:
                sds.append(synthetic_state_dict(models[name]["state_dict"], self.cfg["weights_seed"],
                                                self.cfg["var_constructor_args"]["patch_nums"]))
                sources.append(f"{name}: regenerated (seed {self.cfg['weights_seed']})")
        for name, sd in zip(("vae", "var"), sds):
            recorded = self.meta.get("weights_sha256", {}).get(name, {}).get("per_tensor")
            if recorded:
                bad = [k for k, t in sd.items() if hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest() != recorded.get(k)]
                self.checks.append(Check(f"weights.{name}.sha256", float(len(bad)), 0.0, not bad,
                                         f"{len(bad)} of {len(sd)} tensors differ, e.g. {bad[:3]}" if bad else f"{len(sd)} tensors"))
        return sds[0], sds[1], "; ".join(sources)

    # -------------------------------------------------------------------------------- the run
    @torch.inference_mode()
    def run(self) -> list[Check]:
        # labels first: a set without them fails at once, not after minutes of full-size encoding
        labels_tf = torch.from_numpy(self.first_present("label_tf", "labels", purpose="the teacher-forced labels"))
        calls = {name: self.cfg[f"{name}_call"] for name in ("greedy", "sampled") if f"{name}_call" in self.cfg}
        labels_gen = {name: self.generation_labels(name, call) for name, call in calls.items()}
        vae_sd, var_sd, self.weights_source = self.state_dicts()
        vq_cfg, var_cfg = configs_from_reference(self.cfg)
        vqvae = vqvae_from_state_dict(vae_sd, vq_cfg.patch_nums, what="vae weights")
        var = var_from_state_dict(var_sd, vqvae, what="var weights")

        img = self.input_images()
        if "input_image" in self.cfg:   # our rebuild of the input pixels must equal the recorded ones
            self.compare("input_u8", make_images_u8(self.cfg["batch"], self.cfg["image_size"],
                                                    self.cfg["input_image"]["img_seed"]))
        if "input_u8" in self.cases:
            self.compare("input_img", u8_to_pm1(torch.from_numpy(self.cases["input_u8"])))
        f = vqvae.encode(img)
        self.compare("f_encoded", f)
        ms_idx = vqvae.quantize.f_to_idx_Bl(f)
        for si, idx in enumerate(ms_idx):
            self.compare(f"idxBl.s{si}", idx)
        self.compare("idxBl_cat", torch.cat(ms_idx, dim=1))
        for si, f_hat in enumerate(vqvae.quantize.f_to_f_hats(f)):
            self.compare(f"fhat.s{si}", f_hat)
        if any(k.startswith("recon_last") for k in self.cases):
            self.compare("recon_last", vqvae.reconstruct(img))
        if any(k.startswith("idxBl_to_img") for k in self.cases):
            for si, prefix_img in enumerate(vqvae.idx_to_img(ms_idx, every_prefix=True)):
                self.compare(f"idxBl_to_img.s{si}", prefix_img)

        var_input = vqvae.idx_to_var_input(ms_idx)
        self.compare("var_input", var_input)
        tf_logits = var(labels_tf, var_input)
        self.compare("tf_logits", tf_logits)
        self.compare_logit_summaries("tf_logits", tf_logits)

        for run_name, call in calls.items():
            steps = list(var.generate_steps(labels_gen[run_name], cfg=call["cfg"], top_k=call["top_k"],
                                            top_p=call["top_p"], more_smooth=call["more_smooth"], seed=call["g_seed"]))
            for s in steps:
                self.compare(f"{run_name}.idx.s{s.scale}", s.tokens.flatten(1))
                self.compare(f"{run_name}.cfg_logits.s{s.scale}", s.logits)
                self.compare(f"{run_name}.raw_logits.s{s.scale}", s.raw_logits)
            self.compare(f"{run_name}.idx_cat", torch.cat([s.tokens.flatten(1) for s in steps], dim=1))
            cfg_logits_BLV = torch.cat([s.logits for s in steps], dim=1)
            top_v, top_i = cfg_logits_BLV.topk(5, dim=-1, sorted=True)
            self.compare(f"{run_name}.cfg_logits.top5_values", top_v)
            self.compare(f"{run_name}.cfg_logits.top5_indices", top_i)
            self.compare(f"{run_name}.f_hat", steps[-1].f_hat)
            self.compare(f"{run_name}.img", steps[-1].image())
        return self.checks

    def first_present(self, *keys: str, purpose: str) -> np.ndarray:
        """The first of ``keys`` that cases.npz holds (compact sets say ``label_tf``, the tiny set ``labels``).
        All of ``keys`` that are present count as used: they are inputs, nothing to compare."""
        self.used.update(set(keys) & set(self.cases))
        for key in keys:
            if key in self.cases:
                return self.cases[key]
        raise ReferenceSetError(f"{self.dir}/cases.npz has none of the keys {', '.join(map(repr, keys))} for "
                                f"{purpose}; add one of them (shape (B,), int64) to the reference set")

    def generation_labels(self, run_name: str, call: dict) -> torch.Tensor:
        """cases.npz ``labels_gen`` (compact sets), else the call's own ``label_B`` in config.json."""
        if "labels_gen" in self.cases:
            self.used.add("labels_gen")
            return torch.from_numpy(self.cases["labels_gen"])
        if "label_B" not in call:
            raise ReferenceSetError(f"{self.dir}: the {run_name} generation has no labels: cases.npz has no "
                                    f"'labels_gen' and config.json '{run_name}_call' has no 'label_B'; add either")
        return torch.as_tensor(call["label_B"])

    def input_images(self) -> torch.Tensor:
        if "input_img" in self.cases:
            return torch.from_numpy(self.cases["input_img"])
        if "input_u8" in self.cases:
            return u8_to_pm1(torch.from_numpy(self.cases["input_u8"]))
        spec = self.cfg["input_image"]
        return u8_to_pm1(make_images_u8(self.cfg["batch"], self.cfg["image_size"], spec["img_seed"]))

    def unchecked(self) -> list[str]:
        return sorted(set(self.cases) - self.used - {c.name for c in self.checks})


def format_table(checks: list[Check]) -> str:
    rows = [f"{'check':<34} {'max abs diff':>13} {'tolerance':>10}  result"]
    for c in checks:
        tol = "exact" if c.tolerance == 0 else f"{c.tolerance:.0e}"
        rows.append(f"{c.name:<34} {c.max_abs_diff:>13.3e} {tol:>10}  {'pass' if c.passed else 'FAIL'}"
                    + (f"  ({c.note})" if c.note else ""))
    return "\n".join(rows)


def run_parity(ref_dir: str | Path, threads: int | None = None) -> int:
    """Check every array of the reference set in ``ref_dir`` and print the table; 0 iff every check passes."""
    if threads:
        torch.set_num_threads(threads)
    run = ParityRun(ref_dir)
    checks = run.run()
    print(f"reference set: {run.dir}  ({run.cfg.get('name', '?')}, upstream {run.cfg.get('upstream', {}).get('commit', '?')})")
    print(f"weights: {run.weights_source}\n")
    print(format_table(checks))
    unchecked = run.unchecked()
    if unchecked:
        print(f"\nnot checked ({len(unchecked)}): {', '.join(unchecked)}")
    failed = [c.name for c in checks if not c.passed]
    print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


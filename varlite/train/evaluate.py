"""The ``evaluate`` and ``export-builtin`` commands: full metrics of a trained or shipped model, and shipping one.

evaluate reports, as JSON (stdout, and ``--out`` if given):
- tokenizer: PSNR / SSIM on the held-out split, codebook usage and perplexity per scale;
- transformer: validation loss / accuracy (all tokens, last scale, every scale) on the held-out split's tokens;
- class-consistency of generated samples, judged by a classifier run (``--classifier``), with its test accuracy;
- the Frechet distance between the judge's features of those samples and of the held-out images, with two
  calibrations: the same distance for held-out images blurred through 16x16 and 8x8 (area-downsampled, then
  bilinearly upsampled back), and for as many training images as samples (what a perfect generator would get).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from varlite.builtin import WEIGHTS_DIR, load_builtin, save_builtin
from varlite.core.configs import get_preset

from ..data import images_at
from ..device import pick_device
from .classifier import accuracy, consistency_of, features_of, load_classifier, samples_per_class
from .grid import save_grid
from .loop import load_checked
from .metrics import frechet_distance
from .progress import Progress
from .tokenizer import evaluate_tokenizer, load_tokenizer
from .transformer import TokenCache, evaluate_var, load_var_run, sample_grid_images


def add_evaluate_options(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--builtin", help="name of a shipped model (varlite/weights/<name>.safetensors)")
    src.add_argument("--var", help="a train-var run dir (or its checkpoint.pt): evaluates its tokenizer and VAR")
    src.add_argument("--tokenizer", help="a train-tokenizer run dir (or its checkpoint.pt)")
    p.add_argument("--dataset", default="shapes", help="shapes | cifar10 | folder (default: shapes)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--classifier", help="a train-classifier run dir: also report class-consistency of samples")
    p.add_argument("--per-class", type=int, default=10, help="samples per class for class-consistency")
    p.add_argument("--batch-classes", type=int, default=10,
                   help="classes generated per call (call i uses seed + i; default 10: one call for 10 classes)")
    p.add_argument("--cfg", type=float, default=1.5, help="guidance of the samples (default 1.5)")
    p.add_argument("--top-k", type=int, default=0, help="top-k filter of the samples (0 = off)")
    p.add_argument("--top-p", type=float, default=0.0, help="top-p filter of the samples (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-images", type=int, default=0, help="evaluate on the first N held-out images (0 = all)")
    p.add_argument("--grid", help="also write a (classes x per-class) sample grid PNG here")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="also write the metrics JSON here")


def blurred(img_N3HW: torch.Tensor, side: int) -> torch.Tensor:
    """Images seen through a side x side grid: area-downsampled to it, then bilinearly upsampled back."""
    small = F.interpolate(img_N3HW, size=(side, side), mode="area")
    return F.interpolate(small, size=img_N3HW.shape[-2:], mode="bilinear", align_corners=False)


def frechet_report(classifier, samples01_N3HW: torch.Tensor, test_set, train_set=None, max_images: int = 0) -> dict:
    """Frechet distance of the judge's features: samples vs the held-out split (its first ``max_images``; 0 = all),
    and its calibrations."""
    n_test = len(test_set) if max_images <= 0 else min(max_images, len(test_set))
    test_pm1 = images_at(test_set, torch.arange(n_test), "cpu")
    test_feat = features_of(classifier, test_pm1)
    n = len(samples01_N3HW)
    out = {"fd_samples": frechet_distance(features_of(classifier, samples01_N3HW.mul(2).sub(1)), test_feat),
           "fd_test_blur16": frechet_distance(features_of(classifier, blurred(test_pm1[:n], 16)), test_feat),
           "fd_test_blur8": frechet_distance(features_of(classifier, blurred(test_pm1[:n], 8)), test_feat)}
    if train_set is not None:
        train_pm1 = images_at(train_set, torch.arange(min(n, len(train_set))), "cpu")
        out["fd_train_images"] = frechet_distance(features_of(classifier, train_pm1), test_feat)
    return out


def evaluate_models(vqvae, var, dataset, classifier=None, per_class=10, cfg=1.5, seed=0, max_images=0, grid=None,
                    device="cpu", cache_dir: Path | None = None, top_k: int = 0, top_p: float = 0.0,
                    batch_classes: int = 10, train_set=None, progress: bool = True) -> dict:
    """All metrics of a (vqvae, var) pair (var may be None) on ``dataset``'s held-out split. ``progress``: show on
    stderr which stage runs (``Progress``: a bar on a terminal, else one line at the end)."""
    t0 = time.time()
    judged = var is not None and classifier is not None
    stages = ["tokenizer", *(["transformer"] if var is not None else []), *(["samples", "frechet"] if judged else []),
              *(["grid"] if var is not None and grid and not judged else []),
              *(["classifier accuracy"] if classifier is not None else [])]
    bar = Progress("evaluate", len(stages), 0, enabled=progress, unit="stage")

    def begin(stage: str) -> None:
        bar.update(stages.index(stage), stage, force=True)

    begin("tokenizer")
    out = {"tokenizer": evaluate_tokenizer(vqvae, dataset, max_images, device)}
    if var is not None:
        begin("transformer")
        n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
        cache = TokenCache(vqvae, dataset, cache_dir / "tokens_test.pt" if cache_dir is not None else None)
        idx_NL = cache.get(torch.arange(n))
        if cache_dir is not None:
            cache.save()
        out["var"] = evaluate_var(var, idx_NL, dataset.labels[:n], n, device)
        if judged:
            begin("samples")
            samples01, labels = samples_per_class(var, per_class, cfg, seed, top_k, top_p, batch_classes)
            out["class_consistency"] = consistency_of(classifier, samples01, labels, var.num_classes)
            out["class_consistency"].update(cfg=cfg, top_k=top_k, top_p=top_p, seed=seed, batch_classes=batch_classes)
            begin("frechet")
            out["frechet"] = frechet_report(classifier, samples01, dataset, train_set, max_images)
        if grid:
            if judged:                     # the first 10 measured samples of every class, one row per class
                shown = torch.cat([samples01[labels == c][:10] for c in range(var.num_classes)])
                save_grid(shown, min(10, per_class), grid, row_names=dataset.classes)
            else:
                begin("grid")
                save_grid(sample_grid_images(var, per_class, cfg, seed, top_k, top_p), per_class, grid,
                          row_names=dataset.classes)
    if classifier is not None:
        begin("classifier accuracy")
        out["classifier_test_acc"] = accuracy(classifier, dataset, max_images, device)
    out["eval_seconds"] = round(time.time() - t0, 1)
    bar.update(len(stages), "done")
    bar.close()
    return out


def cmd_evaluate(args) -> int:
    device = pick_device(args.device)
    cache_dir = None
    with torch.no_grad():
        if args.builtin:
            vqvae, var = load_builtin(args.builtin, device)
        elif args.var:
            var, _ = load_var_run(args.var, device)
            vqvae = var.vqvae
            cache_dir = Path(args.var) if Path(args.var).is_dir() else Path(args.var).parent
        else:
            vqvae, _ = load_tokenizer(args.tokenizer, device)
            var = None
        dataset = load_checked(args.dataset, "test", args.data_root, vqvae.config.image_size,
                               var.num_classes if var is not None else None)
        classifier = load_classifier(args.classifier, device)[0] if args.classifier else None
        train_set = load_checked(args.dataset, "train", args.data_root, vqvae.config.image_size) \
            if classifier is not None and var is not None else None
        metrics = evaluate_models(vqvae, var, dataset, classifier, args.per_class, args.cfg, args.seed,
                                  args.max_images, args.grid, device, cache_dir, args.top_k, args.top_p,
                                  args.batch_classes, train_set)
    text = json.dumps(metrics, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def add_export_options(p) -> None:
    p.add_argument("--var", required=True, help="a finished train-var run dir (or its checkpoint.pt)")
    p.add_argument("--name", required=True, help="the built-in name, e.g. shapes or cifar10")
    p.add_argument("--out-dir", default=str(WEIGHTS_DIR), help=f"where to write <name>.pth (default {WEIGHTS_DIR})")
    p.add_argument("--cfg", type=float, default=1.5, help="recommended guidance, stored with the weights")
    p.add_argument("--top-k", type=int, default=0, help="recommended top-k, stored with the weights")
    p.add_argument("--top-p", type=float, default=0.0, help="recommended top-p, stored with the weights")
    p.add_argument("--storage", default="float16", choices=("float16", "int8"),
                   help="float16 (default) or int8 (a quarter of float32; see varlite.builtin)")
    p.add_argument("--preset", default=None, help="store the model under this preset name (default: the run's); "
                   "it must describe exactly the run's configs")


def cmd_export_builtin(args) -> int:
    var, configs = load_var_run(args.var)
    preset = args.preset or configs["train"]["preset"]
    if get_preset(preset).vqvae != var.vqvae.config or get_preset(preset).var != var.config:
        raise ValueError(f"preset {preset!r} does not describe the configs of {args.var} (trained as preset "
                         f"{configs['train']['preset']!r}); export under that preset or one with equal configs")
    sampling = {"cfg": args.cfg, "top_k": args.top_k, "top_p": args.top_p}
    path = save_builtin(Path(args.out_dir) / f"{args.name}.pth", preset, var.vqvae, var, sampling, args.storage)
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.2f} MiB); write its model card {path.with_suffix('.md')}",
          file=sys.stderr)
    return 0


def cmd_export_run(args) -> int:
    """Write a train-var run's VQVAE and VAR weights -- no optimizer state, no RNG -- as one .safetensors file in the
    built-in models' format (float16 or int8 storage, the preset and the run's guidance in its header): a few MB
    instead of the checkpoint's tens, small enough for the walkthrough's upload (Models page)."""
    out = Path(args.out)
    if out.suffix != ".safetensors" or out.is_dir():
        raise ValueError(f"--out must name a .safetensors file; got {args.out!r}")
    var, configs = load_var_run(args.run)
    train = configs["train"]
    sampling = {"cfg": train["sample_cfg"], "top_k": 0, "top_p": 0.0}
    path = save_builtin(out, train["preset"], var.vqvae, var, sampling, args.storage)
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB, {args.storage}, preset {train['preset']}, "
          f"cfg {train['sample_cfg']}): upload it on the walkthrough's Models page", file=sys.stderr)
    return 0


def add_export_run_options(p) -> None:
    p.add_argument("run", help="a train-var run folder or its checkpoint.pt")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--storage", choices=("float16", "int8"), default="float16",
                   help="float16 (default) or int8 (about half the size; weights rounded per output channel)")

"""The ``evaluate`` and ``export-builtin`` commands: full metrics of a trained or shipped model, and shipping one.

evaluate reports, as JSON (stdout, and ``--out`` if given):
- tokenizer: PSNR / SSIM on the held-out split, codebook usage and perplexity per scale;
- transformer: validation loss / accuracy (all tokens, last scale, every scale) on the held-out split's tokens;
- class-consistency of generated samples, judged by a classifier run (``--classifier``), with its test accuracy.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from varlite.builtin import WEIGHTS_DIR, load_builtin, save_builtin

from .classifier import accuracy, class_consistency, load_classifier
from .grid import save_grid
from .loop import load_checked, pick_device
from .tokenizer import evaluate_tokenizer, load_tokenizer
from .transformer import TokenCache, evaluate_var, load_var, sample_grid_images


def add_evaluate_options(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--builtin", help="name of a shipped model (varlite/weights/<name>.pth)")
    src.add_argument("--var", help="a train-var run dir (or its checkpoint.pt): evaluates its tokenizer and VAR")
    src.add_argument("--tokenizer", help="a train-tokenizer run dir (or its checkpoint.pt)")
    p.add_argument("--dataset", default="shapes", help="shapes | cifar10 | folder (default: shapes)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--classifier", help="a train-classifier run dir: also report class-consistency of samples")
    p.add_argument("--per-class", type=int, default=10, help="samples per class for class-consistency")
    p.add_argument("--cfg", type=float, default=1.5, help="guidance of the samples (default 1.5)")
    p.add_argument("--top-k", type=int, default=0, help="top-k filter of the samples (0 = off)")
    p.add_argument("--top-p", type=float, default=0.0, help="top-p filter of the samples (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-images", type=int, default=0, help="evaluate on the first N held-out images (0 = all)")
    p.add_argument("--grid", help="also write a (classes x per-class) sample grid PNG here")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="also write the metrics JSON here")


def evaluate_models(vqvae, var, dataset, classifier=None, per_class=10, cfg=1.5, seed=0, max_images=0, grid=None,
                    device="cpu", cache_dir: Path | None = None, top_k: int = 0, top_p: float = 0.0) -> dict:
    """All metrics of a (vqvae, var) pair (var may be None) on ``dataset``'s held-out split."""
    t0 = time.time()
    out = {"tokenizer": evaluate_tokenizer(vqvae, dataset, max_images, device)}
    if var is not None:
        n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
        cache = TokenCache(vqvae, dataset, cache_dir / "tokens_test.pt" if cache_dir is not None else None)
        idx_NL = cache.get(torch.arange(n))
        if cache_dir is not None:
            cache.save()
        out["var"] = evaluate_var(var, idx_NL, dataset.labels[:n], n, device)
        if classifier is not None:
            out["class_consistency"] = class_consistency(var, classifier, per_class, cfg, seed, top_k, top_p)
            out["class_consistency"].update(top_k=top_k, top_p=top_p)
        if grid:
            save_grid(sample_grid_images(var, per_class, cfg, seed, top_k, top_p), per_class, grid)
    if classifier is not None:
        out["classifier_test_acc"] = accuracy(classifier, dataset, 0, device)
    out["eval_seconds"] = round(time.time() - t0, 1)
    return out


def cmd_evaluate(args) -> int:
    device = pick_device(args.device)
    cache_dir = None
    with torch.no_grad():
        if args.builtin:
            vqvae, var = load_builtin(args.builtin, device)
        elif args.var:
            var, _ = load_var(args.var, device)
            vqvae = var.vqvae
            cache_dir = Path(args.var) if Path(args.var).is_dir() else Path(args.var).parent
        else:
            vqvae, _ = load_tokenizer(args.tokenizer, device)
            var = None
        dataset = load_checked(args.dataset, "test", args.data_root, vqvae.config.image_size,
                               var.num_classes if var is not None else None)
        classifier = load_classifier(args.classifier, device)[0] if args.classifier else None
        metrics = evaluate_models(vqvae, var, dataset, classifier, args.per_class, args.cfg, args.seed,
                                  args.max_images, args.grid, device, cache_dir, args.top_k, args.top_p)
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


def cmd_export_builtin(args) -> int:
    var, configs = load_var(args.var)
    sampling = {"cfg": args.cfg, "top_k": args.top_k, "top_p": args.top_p}
    path = save_builtin(Path(args.out_dir) / f"{args.name}.pth", configs["train"]["preset"], var.vqvae, var, sampling)
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.2f} MiB); write its model card {path.with_suffix('.md')}",
          file=sys.stderr)
    return 0

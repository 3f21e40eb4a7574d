"""The tokenizer's optional loss terms, measured: the same short Shapes run (same preset, steps, batch, seed, data
order) trained with the default loss (reconstruction + vq) and with the perceptual and adversarial terms added, then
judged on held-out images. The weights were chosen once, not tuned: at the shipped Shapes tokenizer's reconstructions
the perceptual term's gradient is about 90 times the MSE's, so --perceptual-weight 0.02 makes it about twice the
MSE's; --gan-weight 0.5 (times the adaptive weight) from step 100 of 300.

Per run: held-out PSNR and SSIM (the trainer's final evaluation, ``evaluate_tokenizer``); the Frechet distance
between the CIFAR-10 judge's features of the reconstructions and of the originals (``builtin:cifar10``, the FID
formula on that network's pooled features: lower is closer in distribution; the perceptual term is trained on the
same network's inner feature maps, so this is not an independent judge); the mean LPIPS-style distance (the
perceptual term's own measure); the edge energy ratio, mean |gradient| of the reconstructions over that of the
originals (finite differences; below 1 = smoother than the data, i.e. blurrier); wall seconds of training (on a
shared machine: not a cost comparison). Writes ``results.json``
and ``reconstructions.png`` (originals, then each run's reconstructions of the first 10 held-out images, one per
class) to ``--out``, and prints a table with the CPU, its features and the load average before and after.

Usage: python bench/bench_tokenizer_losses.py [--steps 300] [--batch-size 16] [--threads 1]
       [--out lessons/data/tokenizer_losses]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from varlite.data import Shapes, to_pm1
from varlite.device import cpu_features
from varlite.train.classifier import features_of, load_classifier
from varlite.train.grid import save_grid
from varlite.train.metrics import frechet_distance
from varlite.train.perceptual import PERCEPTUAL_NET, load_perceptual
from varlite.train.tokenizer import TokenizerTrainConfig, TokenizerTrainer

ROOT = Path(__file__).resolve().parents[1]
RUNS = {                                           # name -> the loss options of that run
    "rec + vq (default)": {},
    "+ perceptual + GAN": {"perceptual_weight": 0.02, "gan_weight": 0.5, "disc_start": 100},
}


def edge_energy(img_N3HW: torch.Tensor) -> float:
    """Mean absolute horizontal and vertical finite difference of images in [-1, 1]."""
    dx = (img_N3HW[..., :, 1:] - img_N3HW[..., :, :-1]).abs().mean()
    dy = (img_N3HW[..., 1:, :] - img_N3HW[..., :-1, :]).abs().mean()
    return float(dx + dy) / 2


@torch.no_grad()
def judge(vqvae, test_pm1: torch.Tensor, perceptual) -> dict:
    """Frechet distance (judge features), mean LPIPS-style distance and edge energy ratio of the reconstructions."""
    vqvae.eval()
    recon = torch.cat([vqvae.reconstruct(test_pm1[i:i + 100]) for i in range(0, len(test_pm1), 100)])
    return {"recon": recon,
            "lpips_style": float(torch.cat([perceptual(recon[i:i + 100], test_pm1[i:i + 100])
                                            for i in range(0, len(recon), 100)]).mean()),
            "edge_ratio": edge_energy(recon) / edge_energy(test_pm1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-images", type=int, default=1000,
                        help="held-out images judged: the first N of the 1000 test images (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--out", default=str(ROOT / "lessons" / "data" / "tokenizer_losses"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = datetime.now(timezone.utc)
    print(f"CPU: {os.cpu_count()} CPUs, {cpu_features()}; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; Python {platform.python_version()}; load average {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f} (1, 5, 15 min)", flush=True)

    classifier, judge_config = load_classifier(PERCEPTUAL_NET)
    perceptual = load_perceptual(PERCEPTUAL_NET)
    test_pm1 = to_pm1(Shapes(split="test").images_u8[:args.eval_images])     # the images the trainer evaluates
    test_features = features_of(classifier, test_pm1)
    results, shown = {}, [test_pm1[:10]]
    with tempfile.TemporaryDirectory(prefix="varlite-bench-losses-") as tmp:
        for n, (name, options) in enumerate(RUNS.items()):
            config = TokenizerTrainConfig(run_dir=str(Path(tmp) / f"run{n}"), preset="shapes", dataset="shapes",
                                          steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                                          warmup_steps=min(30, args.steps), eval_every=0, sample_every=0,
                                          eval_images=args.eval_images, log_every=50, progress=False, **options)
            trainer = TokenizerTrainer(config)
            t0 = time.perf_counter()
            metrics = trainer.run().metrics          # PSNR, SSIM of the first eval_images held-out images
            seconds = time.perf_counter() - t0
            judged = judge(trainer.model, test_pm1, perceptual)
            fd = frechet_distance(features_of(classifier, judged["recon"]), test_features)
            results[name] = {"options": options, "psnr": metrics["psnr"], "ssim": metrics["ssim"],
                             "frechet_judge": fd, "lpips_style": judged["lpips_style"],
                             "edge_ratio": judged["edge_ratio"], "train_seconds": round(seconds, 1)}
            shown.append(judged["recon"][:10])
            print(f"{name}: done in {seconds:.0f} s", flush=True)
    load_after = os.getloadavg()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ["originals", *RUNS]
    save_grid(torch.cat(shown).add(1).div(2), 10, out / "reconstructions.png", scale=3, row_names=names)
    summary = {"date_utc": started.strftime("%Y-%m-%d %H:%M"), "cpu": f"{os.cpu_count()} CPUs, {cpu_features()}",
               "threads": torch.get_num_threads(), "load_before": [round(v, 2) for v in load_before],
               "load_after": [round(v, 2) for v in load_after], "preset": "shapes", "steps": args.steps,
               "batch_size": args.batch_size, "seed": args.seed, "eval_images": args.eval_images,
               "judge": f"{PERCEPTUAL_NET} (test accuracy {judge_config['test_acc']:.4f} on CIFAR-10)",
               "command": " ".join(["python", *sys.argv]), "runs": results, "grid_rows": names}
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")

    print(f"\nshapes preset, {args.steps} steps of {args.batch_size}, seed {args.seed}; {args.eval_images} held-out "
          f"images; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'run':<22} {'PSNR dB':>8} {'SSIM':>6} {'FD judge':>9} {'LPIPS-style':>11} {'edge ratio':>10} "
          f"{'train s':>8}")
    for name, r in results.items():
        print(f"{name:<22} {r['psnr']:>8.2f} {r['ssim']:>6.3f} {r['frechet_judge']:>9.3f} {r['lpips_style']:>11.3f} "
              f"{r['edge_ratio']:>10.3f} {r['train_seconds']:>8.0f}")
    print(f"wrote {out / 'results.json'} and {out / 'reconstructions.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

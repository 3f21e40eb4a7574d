"""Benchmark training throughput (images/s) of both stages at the shipped presets (shapes, cifar10), on CPU.

One optimisation step = forward, backward, gradient clipping and an AdamW step, on synthetic data of the preset's
shapes (random images for the tokenizer; random tokens for the transformer, whose input comes from the tokenizer
exactly as in training). Each case warms up for 2 steps and reports the median of N timed steps.

The machine may be shared: the 1-minute load average is printed with the table, since it changes the numbers.

Usage: python bench/bench_train.py [--threads 2] [--batch-size 32] [--repeats 5] [--presets shapes,cifar10]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from varlite.configs import get_preset
from varlite.train.metrics import per_scale_loss_acc
from varlite.var import VAR
from varlite.vqvae import VQVAE


def time_steps(step, repeats: int) -> float:
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_tokenizer(preset, B: int, repeats: int) -> float:
    torch.manual_seed(0)
    vqvae = VQVAE(preset.vqvae).train()
    opt = torch.optim.AdamW(vqvae.parameters(), lr=1e-4)
    S = preset.vqvae.image_size
    img = torch.rand(B, 3, S, S) * 2 - 1

    def step():
        recon, vq_loss, _ = vqvae(img)
        loss = F.mse_loss(recon, img) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vqvae.parameters(), 2.0)
        opt.step()
    return B / time_steps(step, repeats)


def bench_var(preset, B: int, repeats: int) -> float:
    torch.manual_seed(0)
    vqvae = VQVAE(preset.vqvae).eval()
    var = VAR(preset.var, vqvae).train()
    var.init_weights()
    opt = torch.optim.AdamW(var.parameters(), lr=1e-4)
    V, begin_ends = preset.var.vocab_size, var.begin_ends
    idx_BL = torch.randint(0, V, (B, preset.var.L))
    labels_B = torch.randint(0, preset.var.num_classes, (B,))

    def step():
        with torch.no_grad():
            x_in = vqvae.idx_to_var_input([idx_BL[:, b:e] for b, e in begin_ends])
        loss_BL, _, _ = per_scale_loss_acc(var(labels_B, x_in), idx_BL, begin_ends, 0.1)
        opt.zero_grad(set_to_none=True)
        loss_BL.mean().backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt.step()
    return B / time_steps(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--presets", default="shapes,cifar10")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.presets.split(","):
        preset = get_preset(name)
        n_vq = sum(p.numel() for p in VQVAE(preset.vqvae).parameters())
        rows.append((name, "tokenizer", f"{n_vq / 1e6:.2f}M", preset.vqvae.image_size,
                     bench_tokenizer(preset, args.batch_size, args.repeats)))
        n_var = sum(p.numel() for p in VAR(preset.var, VQVAE(preset.vqvae)).parameters())
        rows.append((name, f"var (L={preset.var.L})", f"{n_var / 1e6:.2f}M", preset.vqvae.image_size,
                     bench_var(preset, args.batch_size, args.repeats)))
    print(f"training throughput, CPU float32, {args.threads} threads, batch {args.batch_size}, median of "
          f"{args.repeats} steps; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'preset':<9} {'stage':<16} {'params':>7} {'image':>6} {'images/s':>9} {'s/step':>7}")
    for name, stage, params, size, ips in rows:
        print(f"{name:<9} {stage:<16} {params:>7} {size:>5}px {ips:>9.1f} {args.batch_size / ips:>7.2f}")


if __name__ == "__main__":
    main()

"""Benchmark training throughput of both stages: images/s, FLOPs per step, achieved FLOP/s against this CPU's
matmul peak (measured by this script, same threads and precision).

One optimisation step = forward, backward, gradient clipping and an AdamW step, on synthetic data of the preset's
shapes (random images for the tokenizer; random tokens for the transformer, whose input comes from the tokenizer in
float32 exactly as in training). ``--precision bf16`` runs the forward pass under bfloat16 autocast as
``--precision bf16`` of the trainers does. Each case warms up for 2 steps and reports the median of N timed steps.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one forward + backward (matmuls,
convolutions, attention; 2 FLOPs per multiply-add; elementwise work, norms and the optimizer are not counted), so
"% of peak" is the fraction of the step spent at matmul speed. The peak is the best of square float32 / bfloat16
matmuls of side 512, 1024 and 2048 run for one second each.

The first line says which matrix instructions the CPU has (AMX-BF16, AVX-512-BF16, or neither: then bfloat16 is
emulated and slower than float32, and ``--precision auto`` measures float32 only). The machine may be shared: the
1-minute load average is printed with the table, since it changes the numbers.

``--candidates`` also measures speed-ups one at a time against the plain step (same maths): ``fused`` (AdamW's
fused kernel), ``compile`` (``torch.compile`` of the model, inductor; its compile time is not in the step time),
``channels-last`` (tokenizer only: NHWC convolutions) and ``batch2x`` (twice the batch; with the learning rate
scaled by the square root of 2 for Adam it is the same run with half the steps).

Usage: python bench/bench_train.py [--threads 2] [--batch-size 32] [--repeats 5] [--precision auto|fp32,bf16]
                                   [--presets shapes,cifar10-s,cifar10-m,cifar10-l] [--stages var,tokenizer]
                                   [--candidates fused,compile,channels-last,batch2x]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from varlite.core.configs import get_preset
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE
from varlite.device import cpu_features, fast_bf16
from varlite.train.metrics import per_scale_loss_acc

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Best FLOP/s of an (n x n) @ (n x n) matmul over n in 512, 1024, 2048."""
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(2):
            a @ b
        t0, runs = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            a @ b
            runs += 1
        best = max(best, 2 * n ** 3 * runs / (time.perf_counter() - t0))
    return best


def time_steps(step, repeats: int) -> float:
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_flops(forward_backward) -> int:
    with FlopCounterMode(display=False) as counter:
        forward_backward()
    return counter.get_total_flops()


def tokenizer_case(preset, B: int, precision: str, candidate: str = ""):
    """(one optimisation step, its forward + backward) of the tokenizer on random images."""
    torch.manual_seed(0)
    vqvae = VQVAE(preset.vqvae).train()
    S = preset.vqvae.image_size
    img = torch.rand(B, 3, S, S) * 2 - 1
    if candidate == "channels-last":
        vqvae, img = vqvae.to(memory_format=torch.channels_last), img.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(vqvae.parameters(), lr=1e-4, fused=candidate == "fused" or None)
    run = torch.compile(vqvae) if candidate == "compile" else vqvae

    def forward_backward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            recon, vq_loss, _ = run(img)
            loss = F.mse_loss(recon.float(), img) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()

    def step():
        forward_backward()
        torch.nn.utils.clip_grad_norm_(vqvae.parameters(), 2.0)
        opt.step()
    return vqvae, step, forward_backward


def var_case(preset, B: int, precision: str, candidate: str = ""):
    """(one optimisation step, its forward + backward) of the transformer on random tokens."""
    torch.manual_seed(0)
    vqvae = VQVAE(preset.vqvae).eval()
    var = VAR(preset.var, vqvae).train()
    var.init_weights()
    opt = torch.optim.AdamW(var.parameters(), lr=1e-4, fused=candidate == "fused" or None)
    run = torch.compile(var) if candidate == "compile" else var
    V, begin_ends = preset.var.vocab_size, var.begin_ends
    idx_BL = torch.randint(0, V, (B, preset.var.L))
    labels_B = torch.randint(0, preset.var.num_classes, (B,))

    def forward_backward():
        with torch.no_grad():
            x_in = vqvae.idx_to_var_input([idx_BL[:, b:e] for b, e in begin_ends])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits_BLV = run(labels_B, x_in)
        loss_BL, _, _ = per_scale_loss_acc(logits_BLV.float(), idx_BL, begin_ends, 0.1)
        opt.zero_grad(set_to_none=True)
        loss_BL.mean().backward()

    def step():
        forward_backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt.step()
    return var, step, forward_backward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="auto",
                        help="comma-separated: fp32, bf16; auto = fp32, and bf16 too where the CPU has AMX-BF16 or "
                             "AVX-512-BF16")
    parser.add_argument("--presets", default="shapes,cifar10-s,cifar10-m,cifar10-l")
    parser.add_argument("--stages", default="var,tokenizer", help="comma-separated: var, tokenizer")
    parser.add_argument("--candidates", default="", help="comma-separated: fused, compile, channels-last, batch2x")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precisions = args.precision.split(",") if args.precision != "auto" else \
        ["fp32", "bf16"] if fast_bf16(torch.device("cpu")) else ["fp32"]
    candidates = [""] + [c for c in args.candidates.split(",") if c]
    peaks = {p: matmul_peak(DTYPES[p]) for p in precisions}
    rows = []
    for name in args.presets.split(","):
        preset = get_preset(name)
        for stage in args.stages.split(","):
            for precision in precisions:
                for candidate in candidates:
                    if candidate == "channels-last" and stage == "var":
                        continue
                    B = 2 * args.batch_size if candidate == "batch2x" else args.batch_size
                    make = var_case if stage == "var" else tokenizer_case
                    model, step, forward_backward = make(preset, B, precision, candidate)
                    flops = count_flops(forward_backward)
                    seconds = time_steps(step, args.repeats)
                    params = sum(p.numel() for p in model.parameters()) / 1e6
                    label = f"var L={preset.var.L}" if stage == "var" else "tokenizer"
                    rows.append((name, label, precision, candidate or "plain", params, B / seconds,
                                 flops / B / 1e9, flops / seconds / 1e9, 100 * flops / seconds / peaks[precision]))
    load = os.getloadavg()[0]
    print(f"CPU: {cpu_features()}")
    print(f"training step (fwd+bwd+AdamW), CPU, {args.threads} threads, batch {args.batch_size}, median of "
          f"{args.repeats} steps; load average {load:.1f} on {os.cpu_count()} CPUs")
    print("matmul peak: " + ", ".join(f"{p} {peaks[p] / 1e9:.0f} GFLOP/s" for p in precisions))
    print(f"{'preset':<10} {'stage':<12} {'prec':<5} {'variant':<13} {'params':>7} {'images/s':>9} {'GFLOP/img':>10} "
          f"{'GFLOP/s':>8} {'% peak':>7}")
    for name, label, precision, candidate, params, ips, gflop_img, gflops, pct in rows:
        print(f"{name:<10} {label:<12} {precision:<5} {candidate:<13} {params:>6.2f}M {ips:>9.1f} {gflop_img:>10.2f} "
              f"{gflops:>8.1f} {pct:>6.0f}%")


if __name__ == "__main__":
    main()

"""d16 generation, varlite vs the official implementation, side by side in one process (CPU, float32).

Both models get the same synthetic weights (``varlite.synthetic``, the official d16 layout) and generate the same
batch (default: 2 images, classes 207 and 980, cfg 4, top-k 1 = greedy, so the tokens must agree exactly). The two
run in turn, A B, B A, A B ... (the order flips every round, so neither always runs first, right after the other has
freed its memory), and a change in the machine's load hits both; the ratio is taken round by round.

Per phase (each scale's transformer pass, the rest of the scale: guidance, sampling, quantizer, next input; the
final decode) it prints the median time of each implementation, the FLOPs of that phase (counted with
``torch.utils.flop_counter.FlopCounterMode``: the transformer on varlite, as both run the same maths there; the
decode on each, since varlite's upsampling convs do 16 instead of 36 multiply-adds per value) and the fraction of
the measured matmul peak (float32, same threads) that the time corresponds to. The official code's phases are timed
with forward hooks (first block -> head: transformer; the decoder's input conv -> decoder: decode).

It checks that every scale's token map is identical and prints the largest image difference. On a shared machine
single rounds swing by tens of percent (the matmul peak itself varies 2x from second to second on a busy VM), so
it prints both the median of the round-by-round ratios and the ratio of each implementation's best round.

Usage:
    python bench/bench_d16.py                                 # varlite only
    python bench/bench_d16.py --upstream PATH/TO/VAR          # side by side with a checkout of FoundationVision/VAR
    options: --threads 2 --rounds 3 --batch 2 --cfg 4 --top-k 1 --bf16 (also varlite under a bfloat16 autocast)

The official code needs ``huggingface_hub`` importable (``pip install huggingface_hub``); nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_train import matmul_peak      # the same measurement as the training benchmark's

CLASSES = (207, 980, 1, 88, 360, 387, 417, 812)


def synthetic_d16():
    """varlite's d16 VQVAE and VAR with synthetic weights, and their state dicts (official layout)."""
    from varlite.core.configs import get_preset
    from varlite.pretrained import var_from_state_dict, vqvae_from_state_dict
    from varlite.synthetic import layout_of, synthetic_state_dict
    from varlite.core.var import VAR
    from varlite.core.vqvae import VQVAE
    preset = get_preset("d16")
    with torch.device("meta"):
        vq_meta = VQVAE(preset.vqvae)
        var_meta = VAR(preset.var, vq_meta)
    vq_sd = synthetic_state_dict(layout_of(vq_meta), 0, preset.var.patch_nums)
    var_sd = synthetic_state_dict(layout_of(var_meta), 0, preset.var.patch_nums)
    vqvae = vqvae_from_state_dict(vq_sd, what="synthetic")
    return vqvae, var_from_state_dict(var_sd, vqvae, what="synthetic"), vq_sd, var_sd


def official_d16(upstream: str, vq_sd: dict, var_sd: dict):
    """The official VQVAE and VAR (built as ``models.build_vae_var`` builds them, minus the random init) with the
    same weights."""
    sys.path.insert(0, os.path.abspath(upstream))
    try:
        from models.var import VAR
        from models.vqvae import VQVAE
    except ImportError as e:
        sys.exit(f"cannot import the official code from {upstream}: {e} "
                 f"(a checkout of FoundationVision/VAR is expected; it needs `pip install huggingface_hub`)")
    patch_nums = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    vqvae = VQVAE(vocab_size=4096, z_channels=32, ch=160, test_mode=True, share_quant_resi=4, v_patch_nums=patch_nums)
    var = VAR(vae_local=vqvae, num_classes=1000, depth=16, embed_dim=1024, num_heads=16, drop_rate=0.0,
              attn_drop_rate=0.0, drop_path_rate=0.1 * 16 / 24, norm_eps=1e-6, shared_aln=False, cond_drop_rate=0.1,
              attn_l2_norm=True, patch_nums=patch_nums, flash_if_available=True, fused_if_available=True)
    vqvae.load_state_dict(vq_sd, strict=True)
    var.load_state_dict(var_sd, strict=True)
    return vqvae.eval(), var.eval()


class PhaseClock:
    """Forward hooks that time the official code's phases: per scale, first block's input -> head's output
    (transformer); the decoder's post_quant_conv input -> decoder output (decode)."""

    def __init__(self, vqvae, var):
        self.transformer, self.decode, self.tokens = [], [], []
        var.blocks[0].register_forward_pre_hook(lambda m, a: self._start())
        var.head.register_forward_hook(lambda m, a, o: self.transformer.append(time.perf_counter() - self.t0))
        vqvae.post_quant_conv.register_forward_pre_hook(lambda m, a: self._start())
        vqvae.decoder.register_forward_hook(lambda m, a, o: self.decode.append(time.perf_counter() - self.t0))
        var.vae_quant_proxy[0].embedding.register_forward_hook(lambda m, a, o: self.tokens.append(a[0].clone()))

    def _start(self):
        self.t0 = time.perf_counter()

    def reset(self):
        self.transformer, self.decode, self.tokens = [], [], []


def run_varlite(var, labels, cfg, top_k, bf16: bool = False):
    """One generation with varlite: (seconds, per-scale transformer s, per-scale rest s, decode s, tokens, image);
    ``bf16``: under a bfloat16 autocast."""
    t0 = time.perf_counter()
    transformer, rest, tokens = [], [], []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for step in var.generate_steps(labels, cfg=cfg, top_k=top_k, seed=0):
            transformer.append(step.timings["transformer"])
            rest.append(step.timings["sampling"] + step.timings["quantizer"])
            tokens.append(step.tokens.flatten(1))
        t_dec = time.perf_counter()
        image = step.image()
        decode = time.perf_counter() - t_dec
    return time.perf_counter() - t0, transformer, rest, decode, tokens, image


def run_official(var, clock, labels, cfg, top_k):
    """One generation with the official code: the same tuple as ``run_varlite`` (its rest is not split by scale:
    total minus the timed phases)."""
    clock.reset()
    t0 = time.perf_counter()
    with torch.no_grad():    # as the official demo runs it
        image = var.autoregressive_infer_cfg(B=len(labels), label_B=torch.tensor(labels), g_seed=0, cfg=cfg,
                                             top_k=top_k, top_p=0.0, more_smooth=False)
    seconds = time.perf_counter() - t0
    return seconds, clock.transformer, None, clock.decode[0], clock.tokens, image


def count_flops(var, labels, cfg, top_k) -> list[float]:
    """FLOPs of each scale (transformer, guidance, sampling, quantizer: all but < 0.1 % in the transformer), counted
    on one varlite generation."""
    per_scale = []
    with torch.inference_mode():
        steps = var.generate_steps(labels, cfg=cfg, top_k=top_k, seed=0)
        for _ in var.patch_nums:
            with FlopCounterMode(display=False) as counter:
                next(steps)
            per_scale.append(counter.get_total_flops())
    return per_scale


def count_decode_flops(decode, batch: int) -> float:
    """FLOPs of one decode of ``batch`` latents, ``decode``: f_hat (B, 32, 16, 16) -> image."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        decode(torch.zeros(batch, 32, 16, 16))
    return counter.get_total_flops()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def report(results: dict, flops_per_scale: list[float], flops_decode: dict, peaks: dict, patch_nums, args) -> None:
    """Print the per-phase table (medians over rounds) and the round-by-round totals and ratios. ``peaks``: the
    matmul peak (FLOP/s) each implementation's "% of peak" is taken against; ``flops_decode``: each one's decode
    FLOPs (the GFLOP column shows varlite's)."""
    names = list(results)
    pct = lambda name, flops, s: f"{100 * flops / s / peaks[name]:>5.0f} %"
    print(f"d16 generation, synthetic weights, {args.threads} threads, batch {args.batch}, cfg {args.cfg}, "
          f"top-k {args.top_k}, {args.rounds} rounds (medians); torch {torch.__version__}; matmul peak "
          + ", ".join(f"{name} {peak / 1e9:.0f} GFLOP/s" for name, peak in peaks.items()))
    print(f"{'phase':<30}" + "".join(f"{n + ' s':>16}" for n in names) + f"{'GFLOP':>8}"
          + "".join(f"{n + ' %':>16}" for n in names))
    rows = []          # (label, time per implementation, FLOPs per implementation or None)
    for si, pn in enumerate(patch_nums):
        times = [median([r[1][si] for r in results[n]]) for n in names]
        rows.append((f"scale {si + 1} transformer ({pn}x{pn})", times, [flops_per_scale[si]] * len(names)))
    rest = [median([r[0] - sum(r[1]) - r[3] for r in results[n]]) for n in names]
    rows.append(("rest (sampling, phi, ...)", rest, None))
    rows.append((f"decode ({args.batch} x 256 px)", [median([r[3] for r in results[n]]) for n in names],
                 [flops_decode[n] for n in names]))
    rows.append(("total", [median([r[0] for r in results[n]]) for n in names],
                 [sum(flops_per_scale) + flops_decode[n] for n in names]))
    for label, times, flops in rows:
        line = f"{label:<30}" + "".join(f"{t:>16.3f}" for t in times)
        if flops is not None:
            line += f"{flops[0] / 1e9:>8.1f}" + "".join(f"{pct(n, f, t):>16}" for n, f, t in zip(names, flops, times))
        print(line)
    if "official" in flops_decode:
        print(f"(decode FLOPs: varlite {flops_decode['varlite'] / 1e9:.1f} G, official "
              f"{flops_decode['official'] / 1e9:.1f} G: nearest upsampling then a 3x3 conv, where varlite runs four "
              f"2x2 convs of the small map)")
    if "varlite-bf16" in results:
        for i, (v, h) in enumerate(zip(results["varlite"], results["varlite-bf16"])):
            agree = [100 * (a == b).float().mean().item() for a, b in zip(v[4], h[4])]
            print(f"round {i + 1}: varlite-bf16 {h[0]:.2f} s = {v[0] / h[0]:.2f}x faster than float32; tokens equal "
                  f"to float32's per scale: " + " ".join(f"{x:.0f}%" for x in agree))
    if "official" in results:
        ratios = [v[0] / o[0] for v, o in zip(results["varlite"], results["official"])]
        for i, (v, o) in enumerate(zip(results["varlite"], results["official"])):
            same = all(torch.equal(a.reshape(-1), b.reshape(-1)) for a, b in zip(v[4], o[4]))
            diff = (v[5] - o[5]).abs().max().item()
            print(f"round {i + 1}: varlite {v[0]:.2f} s, official {o[0]:.2f} s, ratio {ratios[i]:.3f}; "
                  f"token maps identical: {'yes' if same else 'NO'}; largest image difference {diff:.1e}")
        print(f"varlite / official: median ratio {median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
        best = {name: min(r[0] for r in results[name]) for name in ("varlite", "official")}
        print(f"best of {args.rounds} rounds (the least disturbed by the rest of the machine): varlite "
              f"{best['varlite']:.2f} s, official {best['official']:.2f} s, ratio {best['varlite'] / best['official']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", help="a checkout of FoundationVision/VAR to compare with")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, choices=range(1, len(CLASSES) + 1))
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument("--bf16", action="store_true",
                        help="also time varlite under a bfloat16 autocast (`generate --precision bf16`): faster on "
                             "CPUs with AMX/AVX-512-BF16, tokens not identical to float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    labels = list(CLASSES[:args.batch])

    vqvae, var, vq_sd, var_sd = synthetic_d16()
    impls = {"varlite": lambda: run_varlite(var, labels, args.cfg, args.top_k)}
    if args.bf16:
        impls["varlite-bf16"] = lambda: run_varlite(var, labels, args.cfg, args.top_k, bf16=True)
    if args.upstream:
        off_vqvae, off_var = official_d16(args.upstream, vq_sd, var_sd)
        clock = PhaseClock(off_vqvae, off_var)
        impls["official"] = lambda: run_official(off_var, clock, labels, args.cfg, args.top_k)

    flops_per_scale = count_flops(var, labels, args.cfg, args.top_k)
    varlite_decode_flops = count_decode_flops(vqvae.f_hat_to_img, args.batch)
    flops_decode = {name: varlite_decode_flops for name in impls}
    if args.upstream:
        flops_decode["official"] = count_decode_flops(off_vqvae.fhat_to_img, args.batch)
    peak_before = {dtype: matmul_peak(dtype) for dtype in (torch.float32, torch.bfloat16)[:1 + args.bf16]}
    # the peak again after the rounds, keeping the higher: one taken while the machine is busy would understate it
    peak_of = lambda dtype: max(peak_before[dtype], matmul_peak(dtype))
    for run in impls.values():      # warm-up (first touch of the weights, oneDNN's kernels)
        run()
    results = {name: [] for name in impls}
    for round_idx in range(args.rounds):
        order = list(impls) if round_idx % 2 == 0 else list(reversed(impls))   # A B, B A, ...: neither always first
        for name in order:
            results[name].append(impls[name]())
    peaks = {"varlite": peak_of(torch.float32)}
    if args.bf16:
        peaks["varlite-bf16"] = peak_of(torch.bfloat16)
    if args.upstream:
        peaks["official"] = peaks["varlite"]
    report(results, flops_per_scale, flops_decode, peaks, var.patch_nums, args)


if __name__ == "__main__":
    main()

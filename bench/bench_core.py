"""Benchmark the core model at the official d16 config with synthetic weights (CPU, float32).

Each case runs in its own process (so its peak RSS is its own), builds the models on the meta device, loads
synthetic weights without copying, warms up once and reports the median of N runs:

    encode    VQVAE.img_to_idx, B=1, 256x256
    decode    VQVAE.idx_to_img (tokens of all 10 scales -> image), B=1
    forward   VAR teacher-forced forward, B=1, 680 tokens
    generate  VAR.generate, B=2, cfg=1.5, top_k=900, top_p=0.96, including the final decode

Usage: python bench/bench_core.py [--threads 2] [--repeats 5] [--cases encode,decode,forward,generate]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

# the official implementation's medians on the same kind of 2-core machine (float32, 2 threads), from the issue
UPSTREAM_S = {"encode": 0.76, "decode": 1.3, "forward": 1.6, "generate": 9.0}


def build_d16():
    from varlite.core.configs import get_preset
    from varlite.pretrained import var_from_state_dict, vqvae_from_state_dict
    from varlite.synthetic import layout_of, synthetic_state_dict
    from varlite.core.var import VAR
    from varlite.core.vqvae import VQVAE
    preset = get_preset("d16")
    with torch.device("meta"):
        vq_meta = VQVAE(preset.vqvae)
        var_meta = VAR(preset.var, vq_meta)
    vqvae = vqvae_from_state_dict(synthetic_state_dict(layout_of(vq_meta), 0, preset.var.patch_nums), what="synthetic")
    var = var_from_state_dict(synthetic_state_dict(layout_of(var_meta), 0, preset.var.patch_nums), vqvae, what="synthetic")
    return vqvae, var


def run_case(case: str, repeats: int) -> dict:
    vqvae, var = build_d16()
    img = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        ms_idx = vqvae.img_to_idx(img)
        x = vqvae.idx_to_var_input(ms_idx)
    labels = torch.tensor([207])
    fns = {
        "encode": lambda: vqvae.img_to_idx(img),
        "decode": lambda: vqvae.idx_to_img(ms_idx),
        "forward": lambda: var(labels, x),
        "generate": lambda: var.generate([207, 980], cfg=1.5, top_k=900, top_p=0.96, seed=0),
    }
    fn = fns[case]
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):      # the first run is a warm-up
            t = time.perf_counter()
            fn()
            if i:
                times.append(time.perf_counter() - t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "median_s": statistics.median(times), "min_s": min(times), "peak_rss_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="encode,decode,forward,generate")
    parser.add_argument("--one", help=argparse.SUPPRESS)        # internal: run one case in this process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_case(args.one, args.repeats)))
        return
    rows = []
    for case in args.cases.split(","):
        repeats = max(1, args.repeats // 2) if case == "generate" else args.repeats
        out = subprocess.run([sys.executable, __file__, "--one", case, "--threads", str(args.threads),
                              "--repeats", str(repeats)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"varlite core benchmark: official d16 config, synthetic weights, float32, {args.threads} threads, "
          f"torch {torch.__version__}")
    print(f"{'case':<10} {'median s':>9} {'min s':>8} {'upstream s':>11} {'speed-up':>9} {'peak RSS MB':>12}")
    for r in rows:
        up = UPSTREAM_S[r["case"]]
        print(f"{r['case']:<10} {r['median_s']:>9.3f} {r['min_s']:>8.3f} {up:>11.2f} {up / r['median_s']:>8.2f}x "
              f"{r['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()

"""Benchmark the generation trace: what its statistics and attention capture cost, per scale (CPU, float32, B=1,
cfg=1.5).

Three ways of consuming ``VAR.generate_steps``, run round-robin so that a busy machine slows them alike:
    plain     read the tokens only
    stats     also read what the app shows: probability of the chosen tokens, entropy, top-5 candidates (computed on
              demand from the step's logits)
    capture   stats, with capture_attention=True (every layer's attention probabilities too)

A scale's step time is the wall time between two yields plus the consumer's reads, so it includes the statistics'
own work (which the step's ``timings`` leave out); "stats work" is exactly that part, measured as wall time minus
the step's transformer + sampling + quantizer timings. Step times are the best of the rounds (on a shared machine
other processes only ever add time); trace work and decode are medians. The final decode is timed apart.

Models: ``tiny`` (upstream reference config, synthetic weights), the built-in ``shapes`` model if it is shipped, and
the official ``d16`` config with synthetic weights (310 M parameters; about a minute per generation on a 2-core CPU).

Usage: python bench/bench_trace.py [--threads 1] [--repeats 30] [--d16-repeats 1] [--skip-d16]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from varlite import complexity
from varlite.core.configs import get_preset
from varlite.pretrained import var_from_state_dict, vqvae_from_state_dict
from varlite.synthetic import layout_of, synthetic_state_dict
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE

MODES = {"plain": {}, "stats": {}, "capture": {"capture_attention": True}}


def synthetic_models(preset_name: str, seed: int = 0) -> tuple[VQVAE, VAR]:
    """A preset built on the meta device and given synthetic weights without copies (no random init cost)."""
    preset = get_preset(preset_name)
    patch_nums = preset.var.patch_nums
    with torch.device("meta"):
        vq_meta = VQVAE(preset.vqvae)
        var_meta = VAR(preset.var, vq_meta)
    vqvae = vqvae_from_state_dict(synthetic_state_dict(layout_of(vq_meta), seed, patch_nums), patch_nums, what="synthetic")
    var = var_from_state_dict(synthetic_state_dict(layout_of(var_meta), seed, patch_nums), vqvae, what="synthetic")
    return vqvae, var


def timed_generation(var: VAR, mode: str, seed: int) -> dict:
    """Per-scale wall time between yields, the statistics' work inside it, and the final decode time (seconds)."""
    walls, trace_work = [], []
    start = time.perf_counter()
    for step in var.generate_steps([0], cfg=1.5, seed=seed, **MODES[mode]):
        if mode != "plain":
            step.token_prob, step.entropy, step.candidates(5)
        now = time.perf_counter()
        walls.append(now - start)
        trace_work.append(walls[-1] - sum(step.timings.values()))
        start = now
    t0 = time.perf_counter()
    step.image()
    return {"walls": walls, "trace_work": trace_work, "decode": time.perf_counter() - t0}


def bench_model(name: str, var: VAR, repeats: int) -> None:
    print(f"\n## {name}: patch_nums {var.patch_nums}, depth {var.config.depth}, width {var.config.embed_dim}, "
          f"V {var.config.vocab_size}; {repeats} round(s) of {', '.join(MODES)}")
    for step in var.generate_steps([0], seed=0):      # warm-up: the first two scales allocate and touch the weights
        if step.scale == 1:
            break
    runs = {mode: [] for mode in MODES}
    for r in range(repeats):
        for mode in MODES:
            runs[mode].append(timed_generation(var, mode, seed=r))

    def ms(mode, key, si=None, summary=min):
        """``summary`` over the rounds of one scale's value (si) or of the whole generation's (si None), in ms."""
        values = [run[key] if key == "decode" else sum(run[key]) if si is None else run[key][si] for run in runs[mode]]
        return 1e3 * summary(values)

    def pct(new, base):
        return f"{100 * (new - base) / base:+.1f}%"

    rows = []
    for si, pn in enumerate(var.patch_nums):
        plain, trace, capture = (ms(m, "walls", si) for m in MODES)
        rows.append({"scale": si, "side": pn, "plain ms": plain, "stats ms": trace, "stats vs plain": pct(trace, plain),
                     "capture ms": capture, "capture vs plain": pct(capture, plain),
                     "stats work ms": ms("stats", "trace_work", si, statistics.median)})
    plain, trace, capture = (ms(m, "walls") for m in MODES)
    rows.append({"scale": "total", "side": "", "plain ms": plain, "stats ms": trace, "stats vs plain": pct(trace, plain),
                 "capture ms": capture, "capture vs plain": pct(capture, plain),
                 "stats work ms": ms("stats", "trace_work", summary=statistics.median)})
    print(complexity.format_table(rows))
    work = ms("stats", "trace_work", summary=statistics.median) - ms("plain", "trace_work", summary=statistics.median)
    decode = ms("stats", "decode", summary=statistics.median)
    print(f"statistics overhead: {pct(trace, plain)} end to end (best of {repeats}); measured directly, their work "
          f"is {work:.2f} ms = {100 * work / plain:.1f}% of a plain generation")
    print(f"full generation with statistics incl. decode: {trace + decode:.1f} ms (steps {trace:.1f} + decode {decode:.1f})")
    capture_mb = sum(complexity.attention_capture_bytes(var.config)) / 2 ** 20
    print(f"attention capture keeps {capture_mb:.3f} MiB per image (conditional rows, float32)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadier on a shared machine)")
    parser.add_argument("--repeats", type=int, default=30, help="rounds for the small models")
    parser.add_argument("--d16-repeats", type=int, default=1, help="rounds for d16 (about 3 generations each)")
    parser.add_argument("--skip-d16", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, CPU")

    _, tiny = synthetic_models("tiny")
    bench_model("tiny (synthetic weights)", tiny, args.repeats)
    try:
        from varlite.builtin import BuiltinError, load_builtin
        try:
            _, shapes = load_builtin("shapes")
            bench_model("built-in shapes", shapes, args.repeats)
        except BuiltinError as err:
            print(f"\n## built-in shapes: skipped ({err})")
    except ImportError:
        print("\n## built-in shapes: skipped (this version has no varlite.builtin)")
    if not args.skip_d16:
        _, d16 = synthetic_models("d16")
        bench_model("d16 (synthetic weights)", d16, args.d16_repeats)


if __name__ == "__main__":
    main()

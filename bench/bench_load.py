"""Load time and peak memory of the official d16 pair (vae_ch160v4096z32 + var_d16), from .pth and from safetensors.

The files hold synthetic weights in the official layout (``varlite.synthetic``, seed 0), written once to a temporary
folder: the two ``.pth`` files as ``torch.save`` writes them (the official files' format) and a safetensors copy of
each. Every measurement runs in a fresh Python process, so nothing is shared between them but the operating
system's page cache: the files were just written, so they are read from memory, not from disk (a first load after a
reboot is slower, for every format alike). Per way of loading:

- read: the two state dicts (``.pth``: ``torch.load(weights_only=True)``, with ``mmap=True`` as varlite reads them,
  and without; safetensors: ``safetensors.torch.load_file``);
- build: varlite's strict loaders on those state dicts (config inferred, layout verified, tensors assigned);
- touch: a sum over every weight, which reads every page of a memory-mapped file (what the first generation does);
- RSS: resident memory after building and the process's peak, minus the process's resident memory before reading
  (torch and varlite imported).

Each way runs ``--repeats`` times (fresh processes, in turn); the table gives medians. The machine may be shared:
``uptime`` is printed with the table.

Usage: python bench/bench_load.py [--repeats 3] [--dir DIR (keep the files there; default: a temporary folder)]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WAYS = ("pth, mmap", "pth, no mmap", "safetensors")
FILES = {"vae": "vae_ch160v4096z32", "var": "var_d16"}


def write_files(folder: Path) -> None:
    """The synthetic official pair as .pth and as .safetensors (skipped when already there)."""
    import torch
    from safetensors.torch import save_file
    from varlite import pretrained
    from varlite.core.configs import OFFICIAL_PATCH_NUMS
    from varlite.synthetic import synthetic_state_dict
    layouts = pretrained.official_layouts()
    for name, stem in FILES.items():
        if (folder / f"{stem}.safetensors").exists():
            continue
        entry = pretrained.OFFICIAL_FILES["vae" if name == "vae" else "d16"]
        sd = synthetic_state_dict(layouts[entry.layout]["tensors"], seed=0, patch_nums=OFFICIAL_PATCH_NUMS)
        torch.save(sd, folder / f"{stem}.pth")
        save_file({k: v.contiguous() for k, v in sd.items()}, folder / f"{stem}.safetensors")
        del sd


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc)."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def measure(way: str, folder: Path) -> dict:
    """One load of the pair in this process (run as a child): seconds and MB."""
    import torch
    from safetensors.torch import load_file
    from varlite import pretrained
    torch.set_num_threads(1)
    base_mb = rss_mb()
    t0 = time.perf_counter()
    if way == "safetensors":
        sds = {name: load_file(folder / f"{stem}.safetensors") for name, stem in FILES.items()}
    else:
        sds = {name: torch.load(folder / f"{stem}.pth", map_location="cpu", weights_only=True, mmap=way == "pth, mmap")
               for name, stem in FILES.items()}
    t1 = time.perf_counter()
    var_sd = sds["var"]
    vqvae = pretrained.vqvae_from_state_dict(sds["vae"], pretrained.infer_var_config(var_sd).patch_nums)
    var = pretrained.var_from_state_dict(var_sd, vqvae)
    t2 = time.perf_counter()
    built_mb = rss_mb()
    with torch.no_grad():
        total = sum(float(p.sum(dtype=torch.float64)) for p in list(vqvae.parameters()) + list(var.parameters()))
    t3 = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024       # KB on Linux
    return {"read_s": t1 - t0, "build_s": t2 - t1, "touch_s": t3 - t2, "built_mb": built_mb - base_mb,
            "peak_mb": peak_mb - base_mb, "checksum": total}


def machine() -> str:
    """`uptime`, the CPU model, its vector extensions and what torch uses of them."""
    import torch
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    model, flags = "?", set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    vector = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return (f"uptime: {uptime}\nCPU: {model}, {os.cpu_count()} CPUs; {' '.join(vector) or 'no AVX2'}; torch "
            f"{torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="folder for the files (kept); default: a temporary folder")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)     # internal: one measurement
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, Path(args.dir))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        write_files(folder)
        sizes = {fmt: sum((folder / f"{stem}.{fmt}").stat().st_size for stem in FILES.values()) / 2 ** 20
                 for fmt in ("pth", "safetensors")}
        print(f"files: .pth {sizes['pth']:.0f} MiB, .safetensors {sizes['safetensors']:.0f} MiB "
              f"(written in {time.perf_counter() - t0:.0f} s)")
        runs = {way: [] for way in WAYS}
        for _ in range(args.repeats):
            for way in WAYS:                  # in turn, so a change in the machine's load hits every way
                out = subprocess.run([sys.executable, __file__, "--child", way, "--dir", str(folder)],
                                     capture_output=True, text=True, check=True).stdout
                runs[way].append(json.loads(out.strip().splitlines()[-1]))
    checksums = {round(r["checksum"], 3) for results in runs.values() for r in results}
    print(f"\nd16 pair, median of {args.repeats} fresh processes each (torch 1 thread); weights identical in every "
          f"way: {len(checksums) == 1}")
    print(f"{'way':<14} {'read s':>7} {'build s':>8} {'touch s':>8} {'total s':>8} {'RSS built MB':>13} "
          f"{'peak RSS MB':>12}")
    for way, results in runs.items():
        med = {k: statistics.median(r[k] for r in results) for k in results[0] if k != "checksum"}
        total = med["read_s"] + med["build_s"] + med["touch_s"]
        print(f"{way:<14} {med['read_s']:>7.2f} {med['build_s']:>8.2f} {med['touch_s']:>8.2f} {total:>8.2f} "
              f"{med['built_mb']:>13.0f} {med['peak_mb']:>12.0f}")
    print(machine())


if __name__ == "__main__":
    main()

"""The sampling commands of ``python -m varlite``, registered here: ``generate`` (a grid of samples, one row per
class, optionally every scale's token map, contribution and partial image as PNGs) and ``figure`` (one generation's
step-through as a GIF, a PNG strip or an HTML page). Both load a model the same way (``load_generation_model``: a
built-in, an official depth, a train-var run, or a VAR .pth with its VQVAE) and share the model and sampling options.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .builtin import DEFAULT_SAMPLING, list_builtin, load_builtin, sampling_defaults
from .command import device_name, number_in
from .core.var import VAR
from .core.vqvae import VQVAE
from .data import class_names_for
from .device import pick_device
from .export import check_export_path, save_step_through
from .family import check_fits, official_footprint
from .pretrained import OFFICIAL_FILES, DEMO_SAMPLING, load_official, load_pair, official_path
from .train.grid import save_grid

MAX_SEED = 2 ** 63 - 1          # torch.Generator.manual_seed takes a 64-bit integer
MAX_CFG = 100.0                 # guidance far beyond the typical 1.5-4 only saturates the distribution
MAX_IMAGES_PER_CLASS = 256      # --n
MAX_IMAGES = 1024               # --n x classes: one batch, held in memory at once


# ------------------------------------------------------------------------------------------------ generate
ALL_CLASSES_UP_TO = 16      # without --class, a model with at most this many classes samples every class


@dataclass
class GenerationModel:
    """A model ready to sample, with the sampling settings it recommends and its class names ("" when unknown)."""
    vqvae: VQVAE
    var: VAR
    description: str
    sampling: dict
    class_names: list[str]


def load_generation_model(model: str, vae: str | None, cache_dir: str | None, device: torch.device) -> GenerationModel:
    """``model``: a built-in name, an official depth ("d16"), a train-var run folder or its checkpoint.pt, or (with
    ``vae``) a VAR .pth file whose VQVAE file is ``vae``."""
    if vae is not None:
        vqvae, var = load_pair(vae, model, device)
        return GenerationModel(vqvae, var, f"{model} with {vae}", dict(DEFAULT_SAMPLING),
                               class_names_for(None, var.num_classes))
    if model in list_builtin():
        vqvae, var = load_builtin(model, device)
        return GenerationModel(vqvae, var, f"built-in {model}", sampling_defaults(model),
                               class_names_for(model, var.num_classes))
    if re.fullmatch(r"d\d+", model):
        vqvae, var = load_official(int(model[1:]), cache_dir, device)
        return GenerationModel(vqvae, var, f"official VAR-{model}", dict(DEMO_SAMPLING),
                               class_names_for(None, var.num_classes))
    path = Path(model)
    if path.is_dir() or (path.is_file() and path.suffix == ".pt"):
        from .train.transformer import load_var_run
        var, configs = load_var_run(path, device)
        train = configs["train"]
        return GenerationModel(var.vqvae, var, f"training run {path}", {**DEFAULT_SAMPLING, "cfg": train["sample_cfg"]},
                               class_names_for(train["dataset"], var.num_classes, train.get("data_root")))
    if path.is_file():
        raise ValueError(f"{path} is a single weights file: give the VQVAE file it was trained with as --vae "
                         f"(official files, or VQVAE + VAR state_dicts saved by varlite), or pass a train-var run "
                         f"folder or its checkpoint.pt as --model")
    raise ValueError(f"--model {model!r} is neither a built-in model ({', '.join(list_builtin())}), an official "
                     f"depth (d16, d20, d24, d30: `python -m varlite download d16` first) nor an existing train-var "
                     f"run folder or checkpoint.pt")


def parse_classes(values: list[str] | None, names: list[str]) -> list[int]:
    """Class indices from --class values: numbers, or names matched without regard to case ("Red Disc")."""
    num_classes = len(names)
    if not values:
        if num_classes > ALL_CLASSES_UP_TO:
            raise ValueError(f"this model has {num_classes} classes: choose some with --class (numbers or names; "
                             f"--list-classes shows them)")
        return list(range(num_classes))
    by_name = {name.lower(): i for i, name in enumerate(names) if name}
    labels = []
    for value in values:
        text = value.strip()
        if text.lstrip("-").isdigit():
            if not 0 <= int(text) < num_classes:
                raise ValueError(f"--class {text} is outside this model's classes 0..{num_classes - 1}")
            labels.append(int(text))
        elif text.lower() in by_name:
            labels.append(by_name[text.lower()])
        else:
            known = [n for n in names if n]
            shown = (f"its names are {', '.join(map(repr, known[:12]))}{' ...' if len(known) > 12 else ''}"
                     if known else "it has no class names, only numbers")
            raise ValueError(f"--class {value!r} is not a class of this model: {shown}; give a number "
                             f"0..{num_classes - 1} or a name (--list-classes shows them all)")
    return labels


def write_step_pngs(step, colors_V3: np.ndarray, folder: Path, ncols: int, zoom: int) -> None:
    """Three PNGs of one scale k = si + 1, each a grid over the batch at the image's size:
    ``scale<k>_tokens.png`` (each token in its codebook colour, ``viz.codebook_colors``),
    ``scale<k>_contribution.png`` (||contribution|| over channels, viridis, brightest = the largest of this scale)
    and ``scale<k>_image.png`` (the image decoded from the first k scales)."""
    from matplotlib import colormaps
    image_B3HW = step.image()
    side = image_B3HW.shape[-1]
    tokens_B3hw = torch.from_numpy(colors_V3[step.tokens.cpu().numpy()]).permute(0, 3, 1, 2).float()
    norm_BHW = step.contribution.float().norm(dim=1).cpu()
    norm_BHW = norm_BHW / norm_BHW.max().clamp_min(1e-12)
    contribution_B3HW = torch.from_numpy(colormaps["viridis"](norm_BHW.numpy())[..., :3]).permute(0, 3, 1, 2).float()
    for name, maps_B3hw in (("tokens", tokens_B3hw), ("contribution", contribution_B3HW), ("image", image_B3HW)):
        save_grid(F.interpolate(maps_B3hw.float().cpu(), size=(side, side), mode="nearest"), ncols,
                  folder / f"scale{step.scale + 1:02d}_{name}.png", scale=zoom)


def write_overview_figures(steps: list, codebook_VCv: torch.Tensor, folder: Path) -> None:
    """The first image's whole generation as three ``varlite.viz`` figures: tokens.png, latents.png, pyramid.png."""
    from . import viz
    for name, fig in (("tokens", viz.token_map_figure(steps, codebook_VCv)),
                      ("latents", viz.latent_figure(steps, ("contribution", "f_hat"))),
                      ("pyramid", viz.pyramid_figure(steps))):
        fig.savefig(folder / f"{name}.png", dpi=80)


def print_classes(model) -> None:
    """--list-classes: one "index: name" line per class of the model."""
    for i, name in enumerate(model.class_names):
        print(f"{i}: {name}" if name else str(i))


def sampling_of(args, model) -> dict:
    """cfg, top_k and top_p: the command line's where given, else the model's recommendation."""
    return {key: getattr(args, key) if getattr(args, key) is not None else model.sampling[key]
            for key in ("cfg", "top_k", "top_p")}


def autocast_for(precision: str, device: torch.device):
    """The context generation runs in: nothing for "fp32" (the exact path: the official numbers), a bfloat16
    autocast for "bf16" (transformer and decoder in bfloat16; 2.2x faster d16 on a CPU with AMX, measured by
    bench/bench_d16.py --bf16, but the tokens are no longer those of float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def check_official_fits(args, device: torch.device) -> None:
    """Before an official depth whose files are there is loaded: print its size, the memory it needs for this batch
    and a rough time (``varlite.family.official_footprint``), and, on a CPU, refuse with one line (a
    NotEnoughMemoryError: exit 2) when the machine has less memory free, instead of being killed while loading. A GPU's
    memory is not checked here. Missing files are left to the loader, which says how to download them."""
    if args.vae is not None or args.model not in OFFICIAL_FILES or args.model == "vae":
        return
    if not (official_path("vae", args.cache_dir).is_file() and official_path(args.model, args.cache_dir).is_file()):
        return
    images = args.n * len(args.classes) if args.classes and not args.list_classes else 1
    depth = int(args.model[1:])
    print(official_footprint(depth, images).summary(), file=sys.stderr)
    if device.type == "cpu":
        check_fits(depth, images)


def cmd_generate(args) -> int:
    """Sample a grid (one row per class, --n columns; or --one-row, as the official demo lays out its 8 samples) with
    the model's recommended sampling unless overridden. A progress bar counts the scales when stderr is a terminal."""
    device = pick_device(args.device)
    check_official_fits(args, device)
    model = load_generation_model(args.model, args.vae, args.cache_dir, device)
    if args.list_classes:
        print_classes(model)
        return 0
    if Path(args.out).suffix.lower() != ".png" or Path(args.out).is_dir():
        raise ValueError(f"--out must name a .png file (the grid is written as PNG); got {args.out!r}")
    classes = parse_classes(args.classes, model.class_names)
    if args.n * len(classes) > MAX_IMAGES:
        raise ValueError(f"{len(classes)} classes x --n {args.n} = {args.n * len(classes)} images in one batch; "
                         f"at most {MAX_IMAGES}: ask for fewer classes or a smaller --n, and run again for more")
    sampling = sampling_of(args, model)
    labels_B = torch.tensor([c for c in classes for _ in range(args.n)], device=device)
    steps_out = Path(args.steps_out) if args.steps_out else None
    if steps_out is not None:
        steps_out.mkdir(parents=True, exist_ok=True)
        from .viz import codebook_colors     # matplotlib: imported only when figures are written
        colors_V3 = codebook_colors(model.vqvae.quantize.embedding.weight)
    zoom = max(1, 64 // model.vqvae.config.image_size)
    t0 = time.perf_counter()
    kept = []
    bar = tqdm(total=len(model.var.patch_nums), desc="scales", unit="scale", disable=not sys.stderr.isatty())
    with bar, autocast_for(args.precision, device):
        for step in model.var.generate_steps(labels_B, **sampling, more_smooth=args.more_smooth, seed=args.seed):
            bar.update(1)
            if steps_out is not None:
                write_step_pngs(step, colors_V3, steps_out, args.n, zoom)
                kept.append(step.detached())
        row_names = [f"{c} {model.class_names[c]}".strip() for c in classes] if args.labels and not args.one_row \
            else None
        columns = len(labels_B) if args.one_row else args.n
        out = save_grid(step.image(), columns, args.out, scale=zoom, row_names=row_names)
    seconds = time.perf_counter() - t0
    if steps_out is not None:
        write_overview_figures(kept, model.vqvae.quantize.embedding.weight, steps_out)
    rows = ", ".join(f"{c}" + (f" {model.class_names[c]!r}" if model.class_names[c] else "") for c in classes)
    layout = f"one row of {len(labels_B)}" if args.one_row else f"one row each, {args.n} images"
    print(f"wrote {out}: {model.description}, classes {rows} ({layout}), cfg {sampling['cfg']}, "
          f"top-k {sampling['top_k']}, top-p {sampling['top_p']}, more_smooth {args.more_smooth}, seed {args.seed}, "
          f"{device}, {args.precision}, {seconds:.1f} s"
          + (f"; per-scale PNGs in {steps_out}" if steps_out is not None else ""), file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ figure
def parse_one_class(value: str | None, names: list[str]) -> int:
    """The label of ``figure --class``: one number or name (``parse_classes``), or "unconditional" (the class
    index ``num_classes``); without it, class 0."""
    if value is None:
        return 0
    if value.strip().lower() == "unconditional":
        return len(names)
    return parse_classes([value], names)[0]


def cmd_figure(args) -> int:
    """Export one generation's step-through for a slide: an animated GIF (one frame per scale: token map,
    contribution, image so far), a PNG strip of every scale, or one self-contained HTML page to step through the
    scales in a browser, chosen by the suffix of --out."""
    kind = check_export_path(args.out)            # before loading or sampling anything
    device = pick_device(args.device)
    model = load_generation_model(args.model, args.vae, args.cache_dir, device)
    if args.list_classes:
        print_classes(model)
        return 0
    label = parse_one_class(args.class_, model.class_names)
    sampling = sampling_of(args, model)
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast_for(args.precision, device):
        steps = [step.detached() for step in model.var.generate_steps([label], **sampling, seed=args.seed,
                                                                        more_smooth=args.more_smooth)]
    name = "unconditional" if label == len(model.class_names) else (model.class_names[label] or f"class {label}")
    title = (f"{model.description}: {name}, seed {args.seed}, cfg {sampling['cfg']:g}, top-k {sampling['top_k']}, "
             f"top-p {sampling['top_p']:g}" if args.title is None else args.title)
    out = save_step_through(args.out, steps, model.vqvae.quantize.embedding.weight, title=title,
                            panel_px=args.panel_px, frame_ms=args.frame_ms)
    what = {"gif": f"{len(steps)} frames", "png": f"a strip of {len(steps)} scales",
            "html": f"a page to step through {len(steps)} scales"}[kind]
    print(f"wrote {out} ({what}): {model.description}, class {label} {name!r}, cfg {sampling['cfg']}, "
          f"top-k {sampling['top_k']}, top-p {sampling['top_p']}, more_smooth {args.more_smooth}, seed {args.seed}, "
          f"{device}, {args.precision}, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def add_figure_options(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("--class", dest="class_", default=None, metavar="CLASS",
                   help='one class number or name, e.g. 3 or "red disc", or "unconditional" (default: class 0)')
    add_sampling_options(p)
    p.add_argument("--out", default="step_through.gif",
                   help="a .gif (one frame per scale), a .png (a strip of every scale) or an .html (a page to step "
                        "through, one file) (default step_through.gif)")
    p.add_argument("--title", default=None, help="the text above the panels (default: model, class and settings; "
                                                  "'' for none)")
    p.add_argument("--panel-px", type=number_in(16, 1024, int), default=None,
                   help="side of each panel in pixels (default: 128 in a GIF, 96 in a strip)")
    p.add_argument("--frame-ms", type=number_in(20, 60_000, int), default=800,
                   help="GIF: milliseconds per frame (the last one is held 2.5 s; default 800)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Which model (and where), shared by generate and figure."""
    p.add_argument("--model", default="shapes",
                   help="a built-in model (shapes, cifar10), an official depth (d16, d20, d24, d30; download it "
                        "first), a train-var run folder or checkpoint.pt, or a VAR .pth with --vae (default: shapes)")
    p.add_argument("--vae", default=None, help="the VQVAE .pth file of a VAR .pth given as --model")
    p.add_argument("--cache-dir", default=None, help="where official files are (default: $VARLITE_HOME or "
                                                      "~/.cache/varlite)")
    p.add_argument("--list-classes", action="store_true", help="print the model's classes and stop")
    p.add_argument("--device", default="auto", type=device_name,
                   help="auto | cpu | cuda | cuda:N | mps (auto: cuda, else mps, else cpu)")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    """Guidance, filters, smoothing, seed and precision, shared by generate and figure."""
    p.add_argument("--cfg", type=number_in(0, MAX_CFG), default=None,
                   help=f"guidance strength in [0, {MAX_CFG:g}] (default: the model's recommendation)")
    p.add_argument("--top-k", type=number_in(0, 2 ** 31 - 1, int), default=None,
                   help="keep the k most likely tokens (0 = off; default: the model's recommendation)")
    p.add_argument("--top-p", type=number_in(0, 1), default=None,
                   help="nucleus filter in [0, 1] (0 = off; default: the model's recommendation)")
    p.add_argument("--more-smooth", action="store_true", help="Gumbel smoothing of the token embeddings")
    p.add_argument("--seed", type=number_in(0, MAX_SEED, int), default=0,
                   help="the only source of randomness, an integer in [0, 2^63-1] (default 0)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32: exact, the official numbers (default); bf16: a bfloat16 autocast, much faster on "
                        "CPUs with AMX / AVX-512-BF16 and on GPUs, tokens differ from fp32's")


def add_generate_options(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("--class", dest="classes", nargs="+", default=None, metavar="CLASS",
                   help='class numbers or names, e.g. 3 or "red disc" (default: every class, for a model with at '
                        f'most {ALL_CLASSES_UP_TO} classes)')
    p.add_argument("--n", type=number_in(1, MAX_IMAGES_PER_CLASS, int), default=8,
                   help=f"images per class, 1..{MAX_IMAGES_PER_CLASS} (at most {MAX_IMAGES} in all; default 8)")
    add_sampling_options(p)
    p.add_argument("--out", default="samples.png", help="the grid PNG: one row per class (default samples.png)")
    p.add_argument("--labels", action="store_true", help="write each row's class left of it in the grid")
    p.add_argument("--one-row", action="store_true",
                   help="every image in one row, as the official demo lays out its batch (e.g. --class 980 437 22 562 "
                        "--n 2: eight images)")
    p.add_argument("--steps-out", default=None, metavar="DIR",
                   help="also write each scale's token map, contribution and partial image as PNGs into DIR")



def add_subcommands(subparsers) -> None:
    """Register ``generate`` and ``figure`` on the ``python -m varlite`` parser's subparsers."""
    p = subparsers.add_parser("generate", help="sample a grid of images from a built-in, official or trained model",
                              description=cmd_generate.__doc__)
    add_generate_options(p)
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("figure", help="export one generation's step-through: an animated GIF, a PNG strip or "
                                             "an HTML page",
                              description=cmd_figure.__doc__)
    add_figure_options(p)
    p.set_defaults(func=cmd_figure)

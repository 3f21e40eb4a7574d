"""The lessons' concept figures: each lesson opens with a picture of its idea (the paper's Fig. 2 / Fig. 4 style),
drawn from a config or from small arrays before any model code runs. Like ``varlite.viz`` (whose palette and panel
helpers they use), every function returns a new matplotlib ``Figure`` built without pyplot.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .core.sampling import cfg_strength
from .viz import INDICES_UP_TO_SIDE, OKABE_ITO, row_figure, to_numpy


def _box_diagram(ax, boxes: dict, arrows: Sequence[tuple[str, str]], title: str) -> None:
    """Draw named boxes {name: (x, y, text, colour)} (centres in axis units 0..1) joined by arrows (from, to)."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title(title, fontsize=11)
    texts = {}
    for name, (x, y, text, color) in boxes.items():
        texts[name] = ax.text(x, y, text, ha="center", va="center", fontsize=8, gid=name,
                              bbox=dict(boxstyle="round,pad=0.35", facecolor=OKABE_ITO[color], alpha=0.25,
                                        edgecolor=OKABE_ITO[color]))
    for start, end in arrows:                     # arrows clipped at the boxes' edges
        (x0, y0), (x1, y1) = boxes[start][:2], boxes[end][:2]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), gid=f"{start}->{end}",
                    arrowprops=dict(arrowstyle="->", color=OKABE_ITO["black"], lw=1.0, shrinkA=1, shrinkB=1,
                                    patchA=texts[start].get_bbox_patch(), patchB=texts[end].get_bbox_patch()))


def quantization_concept_figure(vectors_N2, codebook_V2) -> Figure:
    """Nearest-code search in two dimensions (lesson 1): the plane coloured by the index of its nearest codebook
    vector (argmin_v ||z - e_v||^2, the Voronoi cells), the codes as stars, and each vector joined to its code."""
    vectors_N2, codebook_V2 = to_numpy(vectors_N2).astype(np.float64), to_numpy(codebook_V2).astype(np.float64)
    if vectors_N2.ndim != 2 or vectors_N2.shape[1] != 2 or codebook_V2.ndim != 2 or codebook_V2.shape[1] != 2:
        raise ValueError(f"expected (N, 2) vectors and a (V, 2) codebook (2-D, to draw); got {vectors_N2.shape} and "
                         f"{codebook_V2.shape}")
    points = np.concatenate([vectors_N2, codebook_V2])
    low, high = points.min(axis=0) - 0.5, points.max(axis=0) + 0.5
    xs, ys = np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200)
    grid_G2 = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    nearest_G = ((grid_G2[:, None] - codebook_V2[None]) ** 2).sum(-1).argmin(1)
    nearest_N = ((vectors_N2[:, None] - codebook_V2[None]) ** 2).sum(-1).argmin(1)
    fig = Figure(figsize=(5.6, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(nearest_G.reshape(len(ys), len(xs)), origin="lower", extent=(low[0], high[0], low[1], high[1]),
              cmap="cividis", alpha=0.45, interpolation="nearest", aspect="auto")
    for vector, code in zip(vectors_N2, nearest_N):
        ax.plot(*zip(vector, codebook_V2[code]), color=OKABE_ITO["black"], linewidth=0.7, gid="assignment")
    ax.scatter(vectors_N2[:, 0], vectors_N2[:, 1], s=14, color=OKABE_ITO["blue"], label="encoder vectors z", zorder=3)
    ax.scatter(codebook_V2[:, 0], codebook_V2[:, 1], s=120, marker="*", color=OKABE_ITO["vermillion"],
               edgecolor="black", label="codebook vectors e_v", zorder=4)
    for v, (x, y) in enumerate(codebook_V2):
        ax.annotate(str(v), (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set_xlabel("dimension 1")
    ax.set_ylabel("dimension 2")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Quantization: every vector is replaced by the index of its nearest code", fontsize=10)
    return fig


def pyramid_concept_figure(patch_nums: Sequence[int]) -> Figure:
    """The token pyramid (lesson 2, the paper's Fig. 4 style): the top row shows token map r_k (pn_k x pn_k cells,
    numbered row-major), the bottom row the final H x W grid coloured by which cell of r_k covers each position --
    what one token of scale k paints when its code is upsampled into f_hat. Cells alternate in colour like a
    checkerboard; the drawn arrays are (pn_k, pn_k) and (H, H)."""
    patch_nums = list(patch_nums)
    H = patch_nums[-1]
    fig = Figure(figsize=(1.7 * len(patch_nums) + 0.5, 4.0), layout="constrained")
    axes = fig.subplots(2, len(patch_nums), squeeze=False)
    for si, pn in enumerate(patch_nums):
        cells_hw = np.arange(pn * pn).reshape(pn, pn)
        cover_H = np.arange(H) * pn // H                     # the cell of r_k above each row/column of the H grid
        covered_HW = cells_hw[cover_H][:, cover_H]
        for ax, image, title in ((axes[0, si], cells_hw, f"r_{si + 1}: {pn}x{pn}"),
                                 (axes[1, si], covered_HW, f"scale {si + 1} on {H}x{H}")):
            checker = (image // pn + image % pn) % 2              # neighbouring cells in alternating colours
            ax.imshow(checker, cmap="cividis", vmin=0, vmax=1, interpolation="nearest", gid="cells")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("token map", fontsize=8)
    axes[1, 0].set_ylabel("area it covers", fontsize=8)
    L = sum(pn * pn for pn in patch_nums)
    fig.suptitle(f"The token pyramid: {len(patch_nums)} scales, L = {L} tokens, one codebook", fontsize=10)
    return fig


def generation_order_figure(patch_nums: Sequence[int]) -> Figure:
    """Next-token vs next-scale (lesson 3, the paper's Fig. 2 style): left, the step at which raster-order AR produces
    each token of the final n x n map (1..n^2); right, VAR's K token maps, every token of scale k produced at step k."""
    patch_nums = list(patch_nums)
    n, K = patch_nums[-1], len(patch_nums)
    fig = Figure(figsize=(3.0 + 1.5 * K, 3.4), layout="constrained")
    grid = fig.add_gridspec(1, K + 2, width_ratios=[2.2, 0.3] + [1.0] * K)
    ax = fig.add_subplot(grid[0, 0])
    order_nn = np.arange(1, n * n + 1).reshape(n, n)
    ax.imshow(order_nn, cmap="viridis", vmin=1, vmax=n * n, interpolation="nearest")
    ax.set_title(f"raster AR: {n * n} steps", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if n <= INDICES_UP_TO_SIDE:
        for (r, c), step in np.ndenumerate(order_nn):
            ax.text(c, r, str(step), ha="center", va="center", fontsize=6, color="white")
    for si, pn in enumerate(patch_nums):
        ax = fig.add_subplot(grid[0, si + 2])
        ax.imshow(np.full((pn, pn), si + 1), cmap="viridis", vmin=1, vmax=K, interpolation="nearest")
        ax.set_title(f"step {si + 1}: {pn * pn}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Next-token vs next-scale: {n * n} sequential steps vs {K} (VAR, "
                 f"{sum(p * p for p in patch_nums)} tokens)", fontsize=10)
    return fig


def adaln_block_figure() -> Figure:
    """One VAR transformer block (lesson 4): the class condition sets, through Linear(SiLU(c)), the multiplier
    (1 + s) and shift b of both LayerNorms and the gates gamma of both branches (lesson 4's notation; the code's
    scale1/shift1/...); attention uses L2-normalised q, k times exp(s_h)."""
    boxes = {
        "x": (0.12, 0.06, "x  (B, L, C)", "sky"),
        "ln1": (0.12, 0.22, "LayerNorm (no affine)", "sky"),
        "mod1": (0.12, 0.36, "LN(x) (1 + s1) + b1", "orange"),
        "attn": (0.12, 0.52, "attention: q/||q|| . k/||k|| x exp(s_h)\n+ block-causal mask", "blue"),
        "gate1": (0.12, 0.67, "x gamma1, add to x", "orange"),
        "ln2": (0.55, 0.67, "LayerNorm: LN(x) (1 + s2) + b2", "orange"),
        "ffn": (0.55, 0.82, "FFN: Linear 4C, GELU, Linear C", "blue"),
        "gate2": (0.55, 0.95, "x gamma2, add to x  ->  next block", "orange"),
        "class": (0.85, 0.06, "class y -> embedding c  (B, C)", "green"),
        "ada": (0.85, 0.26, "Linear(SiLU(c)) -> 6C", "green"),
        "six": (0.85, 0.44, "gamma1 gamma2 s1\ns2 b1 b2", "green"),
    }
    arrows = [("x", "ln1"), ("ln1", "mod1"), ("mod1", "attn"), ("attn", "gate1"), ("gate1", "ln2"), ("ln2", "ffn"),
              ("ffn", "gate2"), ("class", "ada"), ("ada", "six"), ("six", "mod1"), ("six", "gate1"), ("six", "ln2"),
              ("six", "gate2")]
    fig = Figure(figsize=(8.4, 5.4), layout="constrained")
    _box_diagram(fig.subplots(), boxes, arrows, "An AdaLN block: the class steers every LayerNorm and gate")
    return fig


def cfg_ramp_figure(num_scales: int, cfgs: Sequence[float] = (1.5, 4.0), dit_scale: float = 1.5) -> Figure:
    """The guidance scale 1 + t_k VAR applies at each scale k (t_k = cfg (k-1)/(K-1), ``sampling.cfg_strength``;
    logits = l_u + (1 + t_k)(l_c - l_u)), one line per cfg, against DiT's constant guidance scale (dashed)."""
    ks = np.arange(1, num_scales + 1)
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for cfg, color, marker in zip(cfgs, ("blue", "vermillion", "green", "purple"), "osD^"):
        ax.plot(ks, [1 + cfg_strength(cfg, si, num_scales) for si in range(num_scales)], marker + "-",
                color=OKABE_ITO[color], label=f"VAR, cfg = {cfg:g}")
    ax.axhline(dit_scale, color=OKABE_ITO["black"], linestyle="--", label=f"DiT: constant {dit_scale:g}")
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=0.8, label="no guidance (1)")
    ax.set_xticks(ks)
    ax.set_xlabel("scale k")
    ax.set_ylabel("guidance scale 1 + t_k")
    ax.legend(fontsize=8)
    ax.set_title("Classifier-free guidance ramps up over the scales", fontsize=10)
    return fig


def training_stages_figure() -> Figure:
    """VAR's two training stages (lesson 6, the paper's Fig. 4 style): the tokenizer with its reconstruction and vq
    losses, then, tokenizer frozen, the transformer trained by teacher forcing -- and what changes at generation."""
    boxes = {
        "img": (0.08, 0.82, "image x", "sky"),
        "enc": (0.27, 0.82, "encoder +\nquant_conv: f", "blue"),
        "quant": (0.5, 0.82, "multi-scale\nquantizer: r_1..r_K", "orange"),
        "dec": (0.73, 0.82, "post_quant_conv +\ndecoder: x'", "blue"),
        "loss1": (0.92, 0.82, "||x' - x||^2\n+ vq loss", "vermillion"),
        "tokens": (0.08, 0.42, "data tokens\nr_1..r_K", "orange"),
        "input": (0.3, 0.42, "teacher forcing:\ninputs from r_<k", "green"),
        "var": (0.52, 0.42, "VAR transformer\n(block-causal)", "blue"),
        "loss2": (0.76, 0.42, "cross-entropy\nof every r_k", "vermillion"),
        "own": (0.3, 0.1, "generation: inputs from\nits OWN samples r^_<k", "purple"),
    }
    arrows = [("img", "enc"), ("enc", "quant"), ("quant", "dec"), ("dec", "loss1"), ("quant", "tokens"),
              ("tokens", "input"), ("input", "var"), ("var", "loss2"), ("own", "var")]
    fig = Figure(figsize=(9.0, 4.4), layout="constrained")
    ax = fig.subplots()
    _box_diagram(ax, boxes, arrows, "Stage 1 (top): the tokenizer.  Stage 2 (middle): the transformer, tokenizer "
                                    "frozen.  Bottom: generation")
    ax.axhline(0.62, color="grey", linewidth=0.6, linestyle=":")
    return fig


def exposure_bias_figure(rise_JK, own_agreement_J) -> Figure:
    """How a generation-time sample at one scale moves the predictions of every finer scale (lesson 6): row j is the
    scale whose data tokens were replaced by the model's own samples, column k a scale scored; the value is the rise
    of the cross-entropy of the data's tokens at scale k over teacher forcing (nats), blank where k <= j (those
    predictions do not depend on scale j). Row labels give how often the sample equalled the data's token."""
    rise_JK = to_numpy(rise_JK).astype(np.float64)
    own_agreement_J = to_numpy(own_agreement_J)
    J, K = rise_JK.shape
    shown_JK = np.where(np.arange(K)[None, :] > np.arange(J)[:, None], rise_JK, np.nan)
    fig = Figure(figsize=(1.0 + 0.75 * K, 1.2 + 0.5 * J), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shown_JK, cmap="magma", vmin=0, interpolation="nearest")
    for (j, k), value in np.ndenumerate(shown_JK):
        if not np.isnan(value):
            ax.text(k, j, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 0.6 * np.nanmax(shown_JK) else "black")
    ax.set_xticks(range(K), [str(k + 1) for k in range(K)])
    ax.set_yticks(range(J), [f"{j + 1} ({a:.0%} same)" for j, a in enumerate(own_agreement_J)])
    ax.set_xlabel("scale k scored (data tokens)")
    ax.set_ylabel("scale sampled by the model")
    fig.colorbar(image, ax=ax, label="rise in cross-entropy (nats)", shrink=0.8)
    ax.set_title("One scale of its own samples: every finer scale pays", fontsize=10)
    return fig


def keep_masks_figure(keep_masks: Sequence) -> Figure:
    """What an edit keeps at each scale (lesson 7): one panel per scale, kept tokens (the source's) light, tokens the
    model generates dark. ``keep_masks``: ``editing.scale_keep_masks`` output, (B, h, w) (first image) or (h, w)."""
    maps = [to_numpy(m[0] if m.ndim == 3 else m).astype(np.float64) for m in keep_masks]
    fig, axes = row_figure(len(maps), panel_inches=1.6)
    for si, (ax, keep_hw) in enumerate(zip(axes, maps)):
        ax.imshow(keep_hw, cmap="cividis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"scale {si + 1}: {int(keep_hw.sum())}/{keep_hw.size} kept", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Zero-shot editing: keep the source's tokens (light), generate the rest (dark), scale by scale",
                 fontsize=10)
    return fig


def scale_cost_figure(patch_nums: Sequence[int]) -> Figure:
    """Where VAR's work goes (lesson 8): per scale k, the tokens produced at that step (pn_k^2, the queries) and the
    query-key pairs its attention computes with a KV cache (pn_k^2 x L_k, L_k = tokens of scales 1..k)."""
    patch_nums = list(patch_nums)
    tokens_K = np.array([pn * pn for pn in patch_nums])
    keys_K = np.cumsum(tokens_K)
    pairs_K = tokens_K * keys_K
    ks = np.arange(1, len(patch_nums) + 1)
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    ax_tokens, ax_pairs = fig.subplots(1, 2)
    for ax, values, title, color in ((ax_tokens, tokens_K, "tokens produced at the step", "blue"),
                                     (ax_pairs, pairs_K, "attention pairs at the step (KV cache)", "vermillion")):
        ax.bar(ks, values, color=OKABE_ITO[color])
        ax.set_xticks(ks)
        ax.set_xlabel("scale k")
        ax.set_title(f"{title}; last scale {values[-1] / values.sum():.0%}", fontsize=9)
    ax_tokens.set_ylabel("pn_k^2")
    ax_pairs.set_ylabel("pn_k^2 x L_k")
    fig.suptitle(f"Few steps, uneven work: {len(patch_nums)} steps, the last ones hold most of it", fontsize=10)
    return fig


def official_pipeline_figure(vqvae_config, var_config) -> Figure:
    """The official model end to end (lesson 9), with the numbers read from its configs: image size, latent, scales
    and tokens, the transformer's depth, width and heads, the vocabulary."""
    H = vqvae_config.patch_nums[-1]
    L = sum(pn * pn for pn in var_config.patch_nums)
    boxes = {
        "img": (0.08, 0.7, f"image\n{vqvae_config.image_size}x{vqvae_config.image_size}x3", "sky"),
        "vae": (0.3, 0.7, f"VQVAE encoder\n(downsample {vqvae_config.downsample})", "blue"),
        "f": (0.52, 0.7, f"f: {H}x{H}x{vqvae_config.z_channels}", "sky"),
        "tok": (0.76, 0.7, f"{len(var_config.patch_nums)} scales, L = {L} tokens\n"
                           f"codebook V = {vqvae_config.vocab_size}", "orange"),
        "var": (0.76, 0.3, f"VAR-d{var_config.depth}: {var_config.depth} blocks,\n"
                           f"C = {var_config.embed_dim}, {var_config.num_heads} heads", "blue"),
        "logits": (0.45, 0.3, f"logits over {var_config.vocab_size} codes\nfor every token", "vermillion"),
        "out": (0.15, 0.3, "decoder: the image\nafter every scale", "sky"),
    }
    arrows = [("img", "vae"), ("vae", "f"), ("f", "tok"), ("tok", "var"), ("var", "logits"), ("logits", "out")]
    fig = Figure(figsize=(8.4, 3.6), layout="constrained")
    _box_diagram(fig.subplots(), boxes, arrows, f"The official VAR-d{var_config.depth} pipeline")
    return fig


CAPSTONE_PIECES = ("nearest_code", "phi_of_scale", "encode_tokens", "var_input", "block_causal_mask", "attention",
                   "adaln_block", "logits_head", "var_forward", "guided_logits", "top_k_top_p", "generate")


def capstone_map_figure() -> Figure:
    """The capstone's twelve pieces (lesson 10) and how they feed each other: tokenizer pieces (orange), transformer
    pieces (blue), sampling pieces (green)."""
    positions = {"nearest_code": (0.1, 0.85), "phi_of_scale": (0.1, 0.6), "encode_tokens": (0.32, 0.72),
                 "var_input": (0.55, 0.72), "block_causal_mask": (0.32, 0.4), "attention": (0.55, 0.4),
                 "adaln_block": (0.55, 0.15), "logits_head": (0.78, 0.15), "var_forward": (0.78, 0.55),
                 "guided_logits": (0.32, 0.12), "top_k_top_p": (0.1, 0.12), "generate": (0.1, 0.38)}
    colors = {"nearest_code": "orange", "phi_of_scale": "orange", "encode_tokens": "orange", "var_input": "orange",
              "block_causal_mask": "blue", "attention": "blue", "adaln_block": "blue", "logits_head": "blue",
              "var_forward": "blue", "guided_logits": "green", "top_k_top_p": "green", "generate": "green"}
    boxes = {name: (*positions[name], f"{n}. {name}", colors[name]) for n, name in enumerate(CAPSTONE_PIECES, 1)}
    arrows = [("nearest_code", "encode_tokens"), ("phi_of_scale", "encode_tokens"), ("encode_tokens", "var_input"),
              ("block_causal_mask", "attention"), ("attention", "adaln_block"), ("adaln_block", "logits_head"),
              ("var_input", "var_forward"), ("logits_head", "var_forward"), ("var_forward", "guided_logits"),
              ("guided_logits", "top_k_top_p"), ("top_k_top_p", "generate"), ("phi_of_scale", "generate")]
    fig = Figure(figsize=(8.8, 4.6), layout="constrained")
    _box_diagram(fig.subplots(), boxes, arrows, "Your VAR in twelve pieces: tokenizer, transformer, sampler")
    return fig


def independence_figure(joint_22) -> Figure:
    """Why parallel draws within a scale can disagree (lesson 11): a 2-position joint distribution p(a, b) (left) and
    the product of its marginals p(a) p(b) (right), what VAR's independent per-position draws sample from. The titles
    give the probability of an inconsistent pair (a != b) under each."""
    joint = to_numpy(joint_22).astype(np.float64)
    if joint.shape != (2, 2) or not np.isclose(joint.sum(), 1.0) or (joint < 0).any():
        raise ValueError(f"expected a (2, 2) joint distribution (non-negative, summing to 1); got {joint.shape}, "
                         f"sum {joint.sum():.3f}")
    product = np.outer(joint.sum(axis=1), joint.sum(axis=0))
    fig, axes = row_figure(2, panel_inches=2.8, extra_width=1.0)
    for ax, table, title in ((axes[0], joint, "true joint p(a, b)"),
                             (axes[1], product, "independent draws p(a) p(b)")):
        shown = ax.imshow(table, cmap="viridis", vmin=0, vmax=1)
        for (r, c), value in np.ndenumerate(table):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.5 else "black")
        ax.set_xticks([0, 1], ["b: no edge", "b: edge"])
        ax.set_yticks([0, 1], ["a: no edge", "a: edge"])
        ax.set_title(f"{title}\nP(a != b) = {table[0, 1] + table[1, 0]:.2f}", fontsize=9)
    fig.colorbar(shown, ax=axes, shrink=0.8, label="probability")
    return fig

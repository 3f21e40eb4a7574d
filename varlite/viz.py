"""Figures of VAR's encoding and generation, step by step, shared by the app and the lessons (the lessons' opening
concept figures are in ``varlite.concept_figures``). Every function returns a new matplotlib ``Figure`` built
directly (no pyplot, so nothing global is created or left open); colormaps are colour-blind safe (viridis, cividis,
magma; lines use the Okabe-Ito palette and differ in style too).

Dimension key: B batch, K scales, h,w one scale's side, H,W final latent side, Cv latent channels, V vocabulary,
L all tokens, l tokens of one scale, Lk keys visible to a scale, nH heads.

Most functions take the steps of a generation (``ScaleStep``) or of an encoding (``EncodeStep``), live or
``detached()``, and a batch index ``b``; scales are titled 1-based (scale k = si + 1). Probability and top-k figures
derive what they show from the step's logits. Attention figures need ``generate_steps(..., capture_attention=True)``;
that keeps depth x nH x l_k x L_k float32 values per scale and image -- for the official d16 config 293 MB per image
(178 MB at the last scale), see ``complexity.attention_capture_bytes``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .core.var import block_causal_bias

OKABE_ITO = {"orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "blue": "#0072B2", "vermillion": "#D55E00",
             "purple": "#CC79A7", "black": "#000000"}
INDICES_UP_TO_SIDE = 8          # token indices are printed on maps of at most this side


def to_numpy(x) -> np.ndarray:
    """A numpy array of a tensor (detached, on the CPU, as float32) or of an array-like (as it is)."""
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def row_figure(n: int, panel_inches: float = 2.2, extra_width: float = 0.0) -> tuple[Figure, list]:
    """A figure with n square panels in a row."""
    fig = Figure(figsize=(panel_inches * n + extra_width, panel_inches + 0.6), layout="constrained")
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def _grid_axis(ax, side: int, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("column", fontsize=8)
    ax.set_ylabel("row", fontsize=8)
    ticks = range(side) if side <= INDICES_UP_TO_SIDE else range(0, side, max(1, side // 4))
    ax.set_xticks(list(ticks))
    ax.set_yticks(list(ticks))
    ax.tick_params(labelsize=7)


# ------------------------------------------------------------------------------------------ token maps
def codebook_colors(codebook_VCv: torch.Tensor) -> np.ndarray:
    """(V, 3) RGB in [0, 1]: each codebook vector projected on the codebook's first 3 principal components.

    Centre the V vectors, take the top-3 right singular vectors (float64), flip each so its largest-magnitude
    projection is positive, and min-max scale each component to [0, 1]. It depends only on the codebook, so a
    token keeps its colour in every figure; similar vectors get similar colours.
    """
    E = codebook_VCv.detach().cpu().double()
    centred = E - E.mean(dim=0, keepdim=True)
    _, _, Vh = torch.linalg.svd(centred, full_matrices=False)
    proj_V3 = torch.zeros(E.shape[0], 3, dtype=torch.float64)
    k = min(3, Vh.shape[0])
    proj_V3[:, :k] = centred @ Vh[:k].T
    for c in range(k):
        if proj_V3[proj_V3[:, c].abs().argmax(), c] < 0:
            proj_V3[:, c] = -proj_V3[:, c]
    low, high = proj_V3.min(dim=0).values, proj_V3.max(dim=0).values
    spread = torch.where(high > low, high - low, torch.ones_like(high))
    return ((proj_V3 - low) / spread).where(high > low, torch.full_like(proj_V3, 0.5)).numpy()


def _token_maps(steps_or_maps: Sequence, b: int) -> list[np.ndarray]:
    """(h, w) int arrays from steps (their ``tokens``) or from (B, h, w) / (h, w) token maps."""
    maps = []
    for item in steps_or_maps:
        tokens = item.tokens if hasattr(item, "tokens") else torch.as_tensor(item)
        maps.append(to_numpy(tokens[b] if tokens.ndim == 3 else tokens).astype(np.int64))
    return maps


def token_map_figure(steps_or_maps: Sequence, codebook_VCv: torch.Tensor, b: int = 0) -> Figure:
    """One panel per scale: each token drawn in its codebook colour (``codebook_colors``), with the token index
    printed on maps of side <= 8. ``steps_or_maps``: steps, or token maps (B, h, w) / (h, w)."""
    colors_V3 = codebook_colors(codebook_VCv)
    maps = _token_maps(steps_or_maps, b)
    fig, axes = row_figure(len(maps))
    for si, (ax, tokens_hw) in enumerate(zip(axes, maps)):
        side = tokens_hw.shape[0]
        ax.imshow(colors_V3[tokens_hw], interpolation="nearest")
        _grid_axis(ax, side, f"scale {si + 1}: {side}x{side}")
        if side <= INDICES_UP_TO_SIDE:
            for (r, c), token in np.ndenumerate(tokens_hw):
                luminance = colors_V3[token] @ np.array([0.299, 0.587, 0.114])
                ax.text(c, r, str(token), ha="center", va="center", fontsize=max(5, 11 - side),
                        color="black" if luminance > 0.5 else "white")
    fig.suptitle("Token maps (colour = codebook vector, 3 principal components as RGB)")
    return fig


# ------------------------------------------------------------------------------------------ latents and images
def _reduce_channels(x_BCvHW: torch.Tensor, b: int, how: str, direction: torch.Tensor | None) -> np.ndarray:
    x_CvHW = x_BCvHW[b].detach().cpu().double()
    if how == "norm":
        return x_CvHW.norm(dim=0).numpy()
    return torch.einsum("chw,c->hw", x_CvHW, direction).numpy()


def _first_component(maps: list[torch.Tensor], b: int) -> torch.Tensor:
    """The first principal direction (Cv,) of all latent vectors in ``maps`` pooled, sign fixed as in codebook_colors."""
    vectors_NCv = torch.cat([m[b].detach().cpu().double().flatten(1).T for m in maps])
    _, _, Vh = torch.linalg.svd(vectors_NCv - vectors_NCv.mean(dim=0), full_matrices=False)
    direction = Vh[0]
    return direction if direction[direction.abs().argmax()] > 0 else -direction


def latent_figure(steps: Sequence, fields: Sequence[str] = ("contribution", "f_hat"), reduce: str = "norm",
                  b: int = 0) -> Figure:
    """A row per latent field (``contribution``: what the scale added, ``f_hat``: the sum so far; encodings also
    have ``rest`` = f - f_hat and ``target``), a column per scale. Each map (Cv, H, W) is shown as its channel L2 norm
    (reduce="norm", viridis) or its projection on the row's first principal component (reduce="pca", cividis);
    one colour scale per row, so scales can be compared."""
    if reduce not in ("norm", "pca"):
        raise ValueError(f"reduce must be 'norm' or 'pca'; got {reduce!r}")
    K = len(steps)
    fig = Figure(figsize=(2.0 * K + 1.0, 2.1 * len(fields) + 0.4), layout="constrained")
    axes = fig.subplots(len(fields), K, squeeze=False)
    for row, name in enumerate(fields):
        maps = [getattr(step, name) for step in steps]
        direction = _first_component(maps, b) if reduce == "pca" else None
        images = [_reduce_channels(m, b, reduce, direction) for m in maps]
        norm = Normalize(min(im.min() for im in images), max(im.max() for im in images))
        for si, (ax, image_HW) in enumerate(zip(axes[row], images)):
            shown = ax.imshow(image_HW, cmap="viridis" if reduce == "norm" else "cividis", norm=norm,
                              interpolation="nearest")
            _grid_axis(ax, image_HW.shape[0], f"{name}, scale {si + 1}")
        fig.colorbar(shown, ax=list(axes[row]), shrink=0.8,
                     label="channel norm" if reduce == "norm" else "1st principal component")
    fig.suptitle(f"Latent maps ({'||.|| over the ' if reduce == 'norm' else 'PCA of the '}"
                 f"{steps[0].f_hat.shape[1]} channels)")
    return fig


def _image_HW3(image_B3HW: torch.Tensor, b: int) -> np.ndarray:
    return np.clip(to_numpy(image_B3HW[b]).transpose(1, 2, 0), 0, 1)


def pyramid_figure(steps: Sequence, b: int = 0, input_image: torch.Tensor | None = None) -> Figure:
    """The image decoded after every scale (``step.image()``), coarse to fine, in a row; ``input_image``
    (B, 3, Hi, Wi) in [0, 1], if given, is added at the end for comparison."""
    panels = [(step.image(), f"after scale {step.scale + 1} ({step.pn}x{step.pn})") for step in steps]
    if input_image is not None:
        panels.append((input_image, "input"))
    fig, axes = row_figure(len(panels))
    for ax, (image, title) in zip(axes, panels):
        ax.imshow(_image_HW3(image, b))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (pixels)", fontsize=8)
        ax.set_ylabel("y (pixels)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Coarse to fine: the image decoded from the first k scales")
    return fig


def _has_image(step) -> bool:
    """Whether the step's image can be shown: decoded already, or a decoder is attached."""
    return step._image is not None or step.decoder is not None


def scale_figure(step, codebook_VCv: torch.Tensor, b: int = 0, image: bool = True) -> Figure:
    """One scale of a generation (``ScaleStep``) or an encoding (``EncodeStep``) in a row of panels: the image
    decoded after this scale (if ``image`` and the step can decode it), the token map r_k in codebook colours, and
    for a generation the probability of the chosen tokens and the entropy (as ``probability_figure``), for an encoding
    the channel norm of the rest f - f_hat still unexplained. What ``varlite.stepper`` shows per scale."""
    generation = hasattr(step, "logits")
    panels = (["image"] if image and _has_image(step) else []) + ["tokens"] + (
        ["p", "entropy"] if generation else ["rest"])
    fig, axes = row_figure(len(panels), panel_inches=2.6, extra_width=1.2)
    colors_V3 = codebook_colors(codebook_VCv)
    for ax, panel in zip(axes, panels):
        if panel == "image":
            ax.imshow(_image_HW3(step.image(), b))
            ax.set_title(f"decoded after scale {step.scale + 1}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        elif panel == "tokens":
            tokens_hw = to_numpy(step.tokens[b]).astype(np.int64)
            ax.imshow(colors_V3[tokens_hw], interpolation="nearest")
            _grid_axis(ax, step.pn, f"tokens r_{step.scale + 1}")
        elif panel == "rest":
            shown = ax.imshow(_reduce_channels(step.rest, b, "norm", None), cmap="viridis", interpolation="nearest")
            _grid_axis(ax, step.rest.shape[-1], f"rest ||f - f_hat||: {float(step.rest_norm[b]):.0%} of ||f||")
            fig.colorbar(shown, ax=ax, shrink=0.8)
        else:
            values, cmap, vmax, label = ((step.token_prob, "viridis", 1.0, "p(chosen token)") if panel == "p" else
                                         (step.entropy, "magma", float(np.log(step.logits.shape[-1])), "entropy (nats)"))
            shown = ax.imshow(to_numpy(values[b]), cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            _grid_axis(ax, step.pn, label)
            fig.colorbar(shown, ax=ax, shrink=0.8)
    t = step.cfg[b] if generation and isinstance(step.cfg, (list, tuple)) else getattr(step, "cfg", None)
    what = f", guidance t = {t:.2f}" if generation else ""
    fig.suptitle(f"Scale {step.scale + 1} of {step.num_scales}: {step.pn}x{step.pn} tokens{what}")
    return fig


def scales_overview_figure(steps: Sequence, codebook_VCv: torch.Tensor, b: int = 0, image: bool = True) -> Figure:
    """Every scale of a generation or encoding at a glance, a column per scale: the image decoded after it (if
    ``image`` and the steps can decode), its token map, and p(chosen token) for a generation or the norm of the rest
    f - f_hat for an encoding. Bare panels (no ticks, one figure), cheap to draw: the static stand-in for
    ``varlite.stepper`` where widgets cannot be shown."""
    generation = hasattr(steps[0], "logits")
    rows = (["image"] if image and _has_image(steps[0]) else []) + ["tokens", "p" if generation else "rest"]
    fig = Figure(figsize=(1.3 * len(steps), 1.4 * len(rows) + 0.5))
    axes = fig.subplots(len(rows), len(steps), squeeze=False)
    colors_V3 = codebook_colors(codebook_VCv)
    for si, step in enumerate(steps):
        for r, row in enumerate(rows):
            ax = axes[r, si]
            if row == "image":
                ax.imshow(_image_HW3(step.image(), b))
            elif row == "tokens":
                ax.imshow(colors_V3[to_numpy(step.tokens[b]).astype(np.int64)], interpolation="nearest")
            elif row == "p":
                ax.imshow(to_numpy(step.token_prob[b]), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(_reduce_channels(step.rest, b, "norm", None), cmap="viridis", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if si == 0:
                ax.set_ylabel({"image": "decoded", "tokens": "tokens", "p": "p(chosen)", "rest": "||rest||"}[row],
                              fontsize=8)
        axes[0, si].set_title(f"k={si + 1}: {step.pn}x{step.pn}", fontsize=8)
    fig.suptitle("Scale by scale (p(chosen): viridis 0..1)" if generation else "Scale by scale", fontsize=9)
    return fig


# ------------------------------------------------------------------------------------------ attention
def attention_mask_figure(patch_nums: Sequence[int], current_scale: int | None = None) -> Figure:
    """The L x L block-causal mask (1 = query row may attend to key column), scale boundaries drawn as lines,
    and, if ``current_scale`` is given, the block that scale computes at its step outlined (its queries, all keys
    up to its own scale)."""
    mask_LL = (block_causal_bias(patch_nums)[0, 0] == 0).float().numpy()
    L = mask_LL.shape[0]
    starts = np.cumsum([0] + [pn * pn for pn in patch_nums])
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(mask_LL, cmap="cividis", vmin=0, vmax=1, interpolation="nearest")
    for start in starts[1:-1]:
        ax.axhline(start - 0.5, color="white", linewidth=0.6)
        ax.axvline(start - 0.5, color="white", linewidth=0.6)
    if current_scale is not None:
        begin, end = starts[current_scale], starts[current_scale + 1]
        ax.add_patch(Rectangle((-0.5, begin - 0.5), end, end - begin, fill=False, edgecolor=OKABE_ITO["orange"],
                               linewidth=2.5, label=f"scale {current_scale + 1}'s step"))
        ax.legend(loc="upper right", fontsize=8)
    centres = (starts[:-1] + starts[1:]) / 2 - 0.5
    labels = [f"{pn}x{pn}" if pn * pn >= L / 40 else "" for pn in patch_nums]   # blocks too thin to label stay blank
    ax.set_xticks(centres, labels, rotation=90, fontsize=7)
    ax.set_yticks(centres, labels, fontsize=7)
    ax.set_xlabel("key token (attended to), by scale")
    ax.set_ylabel("query token, by scale")
    ax.set_title(f"Block-causal attention mask, L = {L} tokens")
    fig.colorbar(shown, ax=ax, ticks=[0, 1], label="may attend (1) / masked (0)", shrink=0.7)
    return fig


def attention_figure(step, patch_nums: Sequence[int], layer: int, head: int | None, row: int, col: int,
                     b: int = 0) -> Figure:
    """Where one token looks: its attention weights in ``layer`` (``head``, or the mean over heads if None) over
    every token of scales 1..k, drawn as one grid per scale with a shared colour scale; the query is outlined.
    The panel titles give each scale's share of the total weight (the shares sum to 1)."""
    if step.attention is None:
        raise ValueError("this step has no attention weights; generate with capture_attention=True")
    depth = len(step.attention)
    if not 0 <= layer < depth:
        raise ValueError(f"layer must be in [0, {depth - 1}]; got {layer}")
    weights_BnHlLk = step.attention[layer]
    if weights_BnHlLk.shape[2] != step.pn * step.pn:
        raise ValueError(f"this step holds the attention of {weights_BnHlLk.shape[2]} chosen queries, not of all "
                         f"{step.pn * step.pn} of scale {step.scale + 1}; generate with capture_attention=True")
    num_heads = weights_BnHlLk.shape[1]
    if head is not None and not 0 <= head < num_heads:
        raise ValueError(f"head must be in [0, {num_heads - 1}] or None (mean over heads); got {head}")
    if not (0 <= row < step.pn and 0 <= col < step.pn):
        raise ValueError(f"query position ({row}, {col}) is outside scale {step.scale + 1}'s {step.pn}x{step.pn} map")
    if len(patch_nums) <= step.scale or patch_nums[step.scale] != step.pn \
            or sum(pn * pn for pn in patch_nums[:step.scale + 1]) != step.end:
        raise ValueError(f"patch_nums {tuple(patch_nums)} do not match this step (scale {step.scale + 1}, side "
                         f"{step.pn}); pass the model's patch_nums")
    per_head_nHLk = weights_BnHlLk[b, :, row * step.pn + col]
    weights_Lk = to_numpy(per_head_nHLk.mean(dim=0) if head is None else per_head_nHLk[head])
    norm = Normalize(0, weights_Lk.max())
    fig, axes = row_figure(step.scale + 1, extra_width=1.0)
    begin = 0
    for si, ax in enumerate(axes):
        pn = patch_nums[si]
        grid_hw = weights_Lk[begin:begin + pn * pn].reshape(pn, pn)
        shown = ax.imshow(grid_hw, cmap="viridis", norm=norm, interpolation="nearest")
        _grid_axis(ax, pn, f"scale {si + 1}: {grid_hw.sum():.2f} of the weight")
        begin += pn * pn
    axes[-1].add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=OKABE_ITO["orange"], linewidth=2.5))
    fig.colorbar(shown, ax=axes, label="attention weight", shrink=0.8)
    who = "mean over heads" if head is None else f"head {head}"
    fig.suptitle(f"Layer {layer}, {who}: where token ({row}, {col}) of scale {step.scale + 1} looks")
    return fig


# ------------------------------------------------------------------------------------------ the sampler's view
def probability_figure(step, b: int = 0) -> Figure:
    """Two maps of one scale: the probability the model gave the chosen token (0..1, viridis) and the entropy of
    its distribution in nats (0..log V, magma): low entropy = confident, high = many tokens plausible."""
    V = step.logits.shape[-1]
    fig, (ax_p, ax_h) = row_figure(2, panel_inches=2.8, extra_width=1.0)
    shown = ax_p.imshow(to_numpy(step.token_prob[b]), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    _grid_axis(ax_p, step.pn, "p(chosen token)")
    fig.colorbar(shown, ax=ax_p, shrink=0.8, label="probability")
    shown = ax_h.imshow(to_numpy(step.entropy[b]), cmap="magma", vmin=0, vmax=float(np.log(V)), interpolation="nearest")
    _grid_axis(ax_h, step.pn, "entropy")
    fig.colorbar(shown, ax=ax_h, shrink=0.8, label="nats (max log V)")
    fig.suptitle(f"Scale {step.pn}x{step.pn}: how sure the model was (guidance t = {step.cfg:.2f})")
    return fig


def topk_figure(step, row: int, col: int, b: int = 0, k: int = 5) -> Figure:
    """Bars of the k most likely tokens at one position (``step.candidates(k)``; the chosen token in orange if it is
    among them)."""
    if not (0 <= row < step.pn and 0 <= col < step.pn):
        raise ValueError(f"position ({row}, {col}) is outside this {step.pn}x{step.pn} map")
    tokens_Bhwk, probs_Bhwk = step.candidates(k)
    tokens_k = to_numpy(tokens_Bhwk[b, row, col]).astype(np.int64)
    probs_k = to_numpy(probs_Bhwk[b, row, col])
    chosen = int(step.tokens[b, row, col])
    fig = Figure(figsize=(4.8, 3.2), layout="constrained")
    ax = fig.subplots()
    colors = [OKABE_ITO["orange"] if t == chosen else OKABE_ITO["blue"] for t in tokens_k]
    ax.bar(range(len(tokens_k)), probs_k, color=colors)
    ax.set_xticks(range(len(tokens_k)))
    ax.set_xticklabels([str(t) for t in tokens_k])
    ax.set_xlabel("token index (most likely first)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ranked = "" if chosen in tokens_k else f", not in the top {len(tokens_k)}"
    ax.set_title(f"Scale {step.pn}x{step.pn}, position ({row}, {col}): chose {chosen} "
                 f"(p = {float(step.token_prob[b, row, col]):.3f}{ranked})", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------ cost
def complexity_figure(rows: Sequence[dict]) -> Figure:
    """Cost curves from ``complexity.scaling_rows``: sequential steps, and attention FLOPs with and without a KV
    cache, for VAR and raster AR against the final side n (log scales)."""
    sides = [r["side n"] for r in rows]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_steps, ax_flops = fig.subplots(1, 2)
    ax_steps.plot(sides, [r["VAR steps"] for r in rows], "o-", color=OKABE_ITO["blue"], label="VAR: K scales")
    ax_steps.plot(sides, [r["AR steps"] for r in rows], "s--", color=OKABE_ITO["vermillion"], label="AR: n^2 tokens")
    ax_steps.set_title("Sequential forward steps")
    ax_steps.set_ylabel("steps")
    for key, style, color in (("VAR attn (cache)", "o-", "blue"), ("AR attn (cache)", "s-", "vermillion"),
                              ("VAR attn (no cache)", "o:", "sky"), ("AR attn (no cache)", "s:", "orange")):
        ax_flops.plot(sides, [r[key] for r in rows], style, color=OKABE_ITO[color], label=key)
    ax_flops.set_title("Attention FLOPs per image")
    ax_flops.set_ylabel("FLOPs")
    for ax in (ax_steps, ax_flops):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("final token-grid side n")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    return fig

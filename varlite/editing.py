"""Token surgery and zero-shot editing: fix some tokens of some scales and let VAR generate the rest.

Dimension key: B batch, K scales, h,w one scale's side, H,W final token-grid side (= patch_nums[-1]), l = h*w tokens
of one scale, V vocabulary, Hi,Wi image side.

Everything here builds ``overrides`` for ``VAR.generate_steps`` -- {scale si (0-based): (tokens (B,h,w), keep
(B,h,w) bool)}: at that scale, every position where ``keep`` is True takes the given token (and its codebook vector)
instead of the sampled one; the other positions are sampled as usual, conditioned on everything fixed so far. The
primitive itself (its type, its check, its application) is ``varlite.core.overrides``, part of the model core.
Editing is the ordinary generation loop with some of its choices made in advance; there is no second loop.

Zero-shot editing (the VAR paper's "zero-shot task generalization"; official ``demo_zero_shot_edit.ipynb``):
- the known image is tokenized, r_1..r_K = tokens(image);
- a keep mask m on the final H x W token grid (1 = keep the known token, 0 = let the model generate) is carried to
  every scale by bilinear resizing (align_corners=False) and a threshold: keep_k = resize(m, pn_k) > 0.5;
- a scale with pn_k^2 <= 3 tokens is kept entirely. In every official schedule that is only the 1x1 first scale:
  its single token sets the image's overall colour and layout, and bilinear resizing to 1x1 would sample the centre
  of the mask -- for a central hole, 0 -- and let the model redraw the whole image;
- in-painting keeps everything outside a region, out-painting keeps the inside, and class-conditional editing is
  in-painting with a real class label instead of the unconditional one (label = num_classes).
Token surgery keeps whole scales (``regenerate_from``: scales before si are kept, si.. resampled), paints a box or
any set of cells of one scale with one token (``paint_tokens``, ``replace_tokens``), or fixes any hand-made set of
positions (``make_overrides`` + ``generate_with_overrides``); ``predict_scale`` gives the model's candidates for
a scale of a source, to choose a replacement from.

To stream the steps of an edit one scale at a time, build the overrides here and call
``var.generate_steps(labels, overrides=...)`` yourself; the functions below run that loop to the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .core.overrides import Overrides, check_override, keep_map, token_map
from .core.trace import ScaleStep
from .core.var import VAR
from .core.vqvae import VQVAE


# ------------------------------------------------------------------------------------------ where tokens come from
@torch.inference_mode()
def image_tokens(vqvae: VQVAE, image_B3HW: torch.Tensor) -> list[torch.Tensor]:
    """The token maps r_1..r_K of an image batch (float, [-1, 1], (B, 3, S, S)), each (B, h, w) int64.

    A wrong size or channel count raises the VQVAE's error (``varlite.images.prepare_image`` fixes both).
    """
    B = image_B3HW.shape[0]
    return [idx_Bl.view(B, pn, pn) for idx_Bl, pn in zip(vqvae.img_to_idx(image_B3HW), vqvae.patch_nums)]


def step_tokens(steps: Sequence) -> list[torch.Tensor]:
    """The token maps (B, h, w) of a finished generation or encoding (a list of ``ScaleStep`` / ``EncodeStep``)."""
    return [step.tokens for step in steps]


# ------------------------------------------------------------------------------------------ masks
def box_mask(side: int, y0: float, x0: float, y1: float, x1: float) -> torch.Tensor:
    """(side, side) bool, True inside the box: rows round(y0*side)..round(y1*side)-1, columns likewise for x.

    Coordinates are fractions of the grid in [0, 1] (the official ``get_edit_mask`` uses the same rounding).
    """
    for name, value in (("y0", y0), ("x0", x0), ("y1", y1), ("x1", x1)):
        if not 0 <= value <= 1:
            raise ValueError(f"box coordinate {name} must be a fraction of the grid in [0, 1]; got {value}")
    if not (y0 < y1 and x0 < x1):
        raise ValueError(f"box must have y0 < y1 and x0 < x1; got y0={y0}, y1={y1}, x0={x0}, x1={x1}")
    mask_HW = torch.zeros(side, side, dtype=torch.bool)
    mask_HW[round(y0 * side):round(y1 * side), round(x0 * side):round(x1 * side)] = True
    return mask_HW


def check_grid_mask(mask, side: int, name: str = "mask") -> torch.Tensor:
    """A mask on the final token grid as a float (B, H, W) tensor with values in [0, 1] (B = 1 for an (H, W) mask).

    Accepts a bool / 0-1 tensor, numpy array or nested list of shape (H, W) or (B, H, W), H = W = ``side``.
    """
    mask_BHW = torch.as_tensor(mask).detach().cpu()
    if mask_BHW.ndim == 2:
        mask_BHW = mask_BHW.unsqueeze(0)
    if mask_BHW.ndim != 3 or tuple(mask_BHW.shape[1:]) != (side, side):
        raise ValueError(f"{name} must have shape ({side}, {side}) or (B, {side}, {side}): one value per token of the "
                         f"final {side}x{side} token grid; got shape {tuple(torch.as_tensor(mask).shape)}. For a "
                         f"pixel mask, average it over each token's patch first (F.adaptive_avg_pool2d to {side}x{side}).")
    mask_BHW = mask_BHW.float()
    if not bool(((mask_BHW >= 0) & (mask_BHW <= 1)).all()):
        raise ValueError(f"{name} values must be in [0, 1] (1 = keep the known token, 0 = generate); "
                         f"got values in [{float(mask_BHW.min())}, {float(mask_BHW.max())}]")
    return mask_BHW


def scale_keep_masks(keep_HW, patch_nums: Sequence[int]) -> list[torch.Tensor]:
    """The official rule carrying a final-grid keep mask to every scale: one (B, h, w) bool mask per scale.

    keep_k = bilinear_resize(m, pn_k x pn_k, align_corners=False) > 0.5, except that a scale with pn_k^2 <= 3
    tokens is kept entirely (see the module docstring). ``keep_HW``: (H, W) or (B, H, W), 1 = keep, 0 = generate.
    """
    mask_B1HW = check_grid_mask(keep_HW, patch_nums[-1], "keep mask").unsqueeze(1)
    B = mask_B1HW.shape[0]
    keeps = []
    for pn in patch_nums:
        if pn * pn <= 3:
            keeps.append(torch.ones(B, pn, pn, dtype=torch.bool))
        else:
            resized_B1hw = F.interpolate(mask_B1HW, size=(pn, pn), mode="bilinear", align_corners=False)
            keeps.append(resized_B1hw[:, 0] > 0.5)
    return keeps


# ------------------------------------------------------------------------------------------ overrides
def make_overrides(var: VAR, tokens, keep) -> Overrides:
    """Check and normalise hand-made token surgery into ``generate_steps`` overrides {k: (tokens, keep)}.

    ``tokens``: {scale: token map} or a list with one entry per scale (None = leave that scale alone); a token map
    is (h, w), (B, h, w) or (B, h*w) integer codebook indices. ``keep``: the same form, each entry True (the whole
    map), False, or a bool (h, w) / (B, h, w) mask; or one True / False for every given scale.
    """
    K = len(var.patch_nums)
    if not isinstance(tokens, dict):
        if len(tokens) > K:
            raise ValueError(f"got token maps for {len(tokens)} scales, but this model has K={K} scales")
        tokens = {si: t for si, t in enumerate(tokens) if t is not None}
    if isinstance(keep, bool):
        keep = {si: keep for si in tokens}
    elif not isinstance(keep, dict):
        keep = {si: m for si, m in enumerate(keep) if m is not None}
    if set(keep) != set(tokens):
        raise ValueError(f"tokens and keep masks must name the same scales; tokens: {list(tokens)}, "
                         f"keep: {list(keep)} (True keeps a whole map)")
    return {si: check_override(var.patch_nums, var.config.vocab_size, si, tokens[si], keep[si]) for si in tokens}


# ------------------------------------------------------------------------------------------ running an edit
@dataclass
class EditResult:
    """A generation with some tokens fixed in advance: its steps, what was fixed, and the before / after images.

    ``source_tokens[k]`` (B or 1, h, w) are the known tokens of scale k (None where none were given) and
    ``keep[k]`` (B or 1, h, w) bool says where they were forced. ``image()`` is the result and ``source_image()``
    what the known tokens decode to (the "before"), both (B, 3, Hi, Wi) in [0, 1].
    """
    steps: list[ScaleStep]
    source_tokens: list[torch.Tensor | None]
    keep: list[torch.Tensor]
    labels: torch.Tensor
    source_f_hat: torch.Tensor | None = field(default=None, repr=False)   # (B, Cv, H, W) from all K source maps
    _source_image: torch.Tensor | None = field(default=None, repr=False)

    @property
    def tokens(self) -> list[torch.Tensor]:
        """The token maps (B, h, w) of the result, fixed and generated."""
        return step_tokens(self.steps)

    def image(self) -> torch.Tensor:
        return self.steps[-1].image()

    def source_image(self) -> torch.Tensor:
        """The decoded known tokens (for an encoded image: the tokenizer's reconstruction, not the raw input)."""
        if self.source_f_hat is None:
            raise ValueError("only some scales' tokens were given, so there is no complete source image to decode")
        if self._source_image is None:
            self._source_image = self.steps[-1].decoder(self.source_f_hat)
        return self._source_image


def _run(var: VAR, labels, overrides: Overrides, source_tokens: list, sampling: dict) -> EditResult:
    """Generate with ``overrides`` to the end; a single label is repeated for the batch of the token maps."""
    batches = ({t.shape[0] for t, _ in overrides.values()} | {m.shape[0] for _, m in overrides.values()}
               | {t.shape[0] for t in source_tokens if t is not None})
    if torch.as_tensor(labels).ndim == 0:
        labels = torch.as_tensor(labels).repeat(max(batches, default=1))
    labels_B = var.check_labels(labels)
    if not batches <= {1, labels_B.shape[0]}:
        raise ValueError(f"token maps / masks have batch {sorted(batches - {1})} but there are {labels_B.shape[0]} "
                         f"labels; give one label per row of the maps (or maps of batch 1, shared by all labels)")
    steps = list(var.generate_steps(labels_B, overrides=overrides, **sampling))
    keep = [overrides[si][1] if si in overrides else torch.zeros(1, pn, pn, dtype=torch.bool)
            for si, pn in enumerate(var.patch_nums)]
    source_f_hat = None
    if all(t is not None for t in source_tokens):
        with torch.inference_mode():
            source_f_hat = var.vqvae.quantize.idx_to_f_hats([t.flatten(1).to(labels_B.device) for t in source_tokens])[-1]
    return EditResult(steps, source_tokens, keep, labels_B, source_f_hat)


def generate_with_overrides(var: VAR, labels, overrides: Overrides, **sampling) -> EditResult:
    """Run ``var.generate_steps(labels, overrides=overrides, **sampling)`` to the end, after checking the overrides.

    ``overrides``: {scale: (tokens, keep)} in any form ``make_overrides`` accepts per scale. ``sampling``: any of
    generate_steps' keyword arguments (cfg, top_k, top_p, more_smooth, seed, generator, capture_attention).
    """
    checked = {si: check_override(var.patch_nums, var.config.vocab_size, si, tokens, keep) for si, (tokens, keep) in overrides.items()}
    source_tokens = [checked[si][0] if si in checked else None for si in range(len(var.patch_nums))]
    return _run(var, labels, checked, source_tokens, sampling)


def _source_tokens(var: VAR, source) -> list[torch.Tensor]:
    """K token maps (B, h, w) int64 from ``source``: an image batch (B, 3, S, S) in [-1, 1], or K token maps."""
    if isinstance(source, torch.Tensor) and source.is_floating_point():
        return image_tokens(var.vqvae, source)
    K = len(var.patch_nums)
    if isinstance(source, torch.Tensor) or len(source) != K:
        got = f"a tensor of shape {tuple(source.shape)}" if isinstance(source, torch.Tensor) else f"{len(source)} maps"
        raise ValueError(f"source must be an image batch (B, 3, S, S) in [-1, 1] or a list of K={K} token maps "
                         f"(e.g. step_tokens(steps)); got {got}")
    return [token_map(t, si, pn, var.config.vocab_size) for si, (t, pn) in enumerate(zip(source, var.patch_nums))]


def regenerate_from(var: VAR, source, from_scale: int, labels, **sampling) -> EditResult:
    """Token surgery by scale: keep the source's token maps of scales < ``from_scale``, sample scales >= it.

    from_scale = 0 is an ordinary generation; from_scale = K keeps every token (the source decoded again).
    ``source``: an image batch or K token maps. A forced token still consumes its random draw, so regenerating a
    generation's own tokens with its own seed reproduces it exactly, whatever ``from_scale``.
    """
    tokens = _source_tokens(var, source)
    K = len(var.patch_nums)
    if not (isinstance(from_scale, int) and 0 <= from_scale <= K):
        raise ValueError(f"from_scale must be an int in [0, {K}] (scales before it are kept); got {from_scale!r}")
    overrides = make_overrides(var, tokens[:from_scale], True)
    return _run(var, labels, overrides, tokens, sampling)


def replace_tokens(var: VAR, source, si: int, where_hw, token: int, labels, **sampling) -> EditResult:
    """Token surgery on chosen cells: at scale ``si`` set every token where ``where_hw`` is True to ``token``, keep
    the source's scales < si and the rest of scale si, and generate the finer scales.

    ``where_hw``: a bool (h, w) or (B, h, w) mask on scale si's grid (a painted set of cells); ``source``: an image
    batch or K token maps; ``source_image()`` decodes the source.
    """
    tokens = _source_tokens(var, source)
    K = len(var.patch_nums)
    if not (isinstance(si, int) and 0 <= si < K):
        raise ValueError(f"scale {si!r} does not exist: this model has K={K} scales, numbered 0..{K - 1}")
    where_Bhw = keep_map(where_hw, si, var.patch_nums[si])
    painted_Bhw = torch.where(where_Bhw, torch.as_tensor(token), tokens[si])
    overrides = make_overrides(var, tokens[:si] + [painted_Bhw], True)
    return _run(var, labels, overrides, tokens, sampling)


def paint_tokens(var: VAR, source, si: int, box: tuple[float, float, float, float], token: int, labels,
                 **sampling) -> EditResult:
    """Token surgery with a brush: ``replace_tokens`` on the cells of scale ``si`` inside ``box`` = (y0, x0, y1,
    x1) (fractions of the grid, ``box_mask``'s rule)."""
    K = len(var.patch_nums)
    if not (isinstance(si, int) and 0 <= si < K):
        raise ValueError(f"scale {si!r} does not exist: this model has K={K} scales, numbered 0..{K - 1}")
    return replace_tokens(var, source, si, box_mask(var.patch_nums[si], *box), token, labels, **sampling)


def predict_scale(var: VAR, source, si: int, labels, **sampling) -> ScaleStep:
    """What the model predicts for scale ``si`` of ``source`` given the source's coarser scales: the step of scale
    si of a generation whose scales < si are forced to the source's tokens (its ``probs`` and ``candidates(k)``
    are the model's choices for every position of that scale). The loop stops after scale si.

    For a generated source with its own label, sampling settings and seed, the step's tokens are the source's.
    """
    tokens = _source_tokens(var, source)
    K = len(var.patch_nums)
    if not (isinstance(si, int) and 0 <= si < K):
        raise ValueError(f"scale {si!r} does not exist: this model has K={K} scales, numbered 0..{K - 1}")
    if torch.as_tensor(labels).ndim == 0:
        labels = torch.as_tensor(labels).repeat(tokens[0].shape[0])
    for step in var.generate_steps(labels, overrides=make_overrides(var, tokens[:si], True), **sampling):
        if step.scale == si:
            return step
    raise AssertionError("generate_steps ended before scale si")     # unreachable: it yields every scale


def edit(var: VAR, source, keep_HW, labels, **sampling) -> EditResult:
    """Zero-shot editing with the official mask rule: keep the source's tokens where ``keep_HW`` says so, at every
    scale (``scale_keep_masks``), and generate the rest for ``labels`` (num_classes = unconditional).

    ``source``: an image batch (B, 3, S, S) in [-1, 1] or its K token maps; ``keep_HW``: (H, W) or (B, H, W) on
    the final token grid, 1 = keep, 0 = generate.
    """
    tokens = _source_tokens(var, source)
    overrides = make_overrides(var, tokens, scale_keep_masks(keep_HW, var.patch_nums))
    return _run(var, labels, overrides, tokens, sampling)


def inpaint(var: VAR, source, hole_HW, labels=None, **sampling) -> EditResult:
    """Generate inside ``hole_HW`` (1 = the region to fill, on the final token grid) and keep everything else.

    labels default to the unconditional class (num_classes), as in the official demo.
    """
    hole_BHW = check_grid_mask(hole_HW, var.patch_nums[-1], "hole mask")
    return edit(var, source, 1 - hole_BHW, var.num_classes if labels is None else labels, **sampling)


def outpaint(var: VAR, source, known_HW, labels=None, **sampling) -> EditResult:
    """Keep the source inside ``known_HW`` (1 = known, on the final token grid) and generate around it.

    labels default to the unconditional class (num_classes).
    """
    return edit(var, source, known_HW, var.num_classes if labels is None else labels, **sampling)


def edit_class(var: VAR, source, region_HW, labels, **sampling) -> EditResult:
    """Class-conditional editing: regenerate ``region_HW`` (1 = change, final token grid) as class ``labels`` and keep
    the rest -- in-painting with a real class (0..num_classes-1) instead of the unconditional one."""
    if bool((torch.as_tensor(labels) == var.num_classes).any()):
        raise ValueError(f"edit_class needs real classes in 0..{var.num_classes - 1}; label {var.num_classes} is "
                         f"'unconditional' (that is in-painting: use inpaint)")
    return inpaint(var, source, region_HW, labels, **sampling)

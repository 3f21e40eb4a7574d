"""The official family VAR-d16 ... d36 before anything is loaded: each depth's exact size, the memory it needs to
generate in float32 and a rough time per image, from its config alone (``official_footprint``), and the refusal of a
depth the machine has too little memory free for (``check_fits``), so that loading it does not get the process killed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .core.configs import VARConfig, VQVAEConfig, official_var, official_vqvae
from .core.var import VAR
from .core.vqvae import VQVAE
from .device import available_memory_bytes
from .pretrained import OFFICIAL_FILES, official_depths

# d16 generating 2 images in float32 on the benchmark machine (docs/BENCHMARKS.md, bench_d16.py run 6: a 2-vCPU Xeon,
# 2 threads, quiet), per image: the transformer with sampling (scales 1-10: 5.67 s, sampling 0.07 s, for 2 images)
# and the decode of one 256-px image (2.82 s for 2).
D16_TRANSFORMER_S_PER_IMAGE = (5.67 + 0.07) / 2
D16_DECODE_S_PER_IMAGE = 2.82 / 2
RUNTIME_BYTES = 2**29        # 0.5 GB: the Python process with torch (and the app) before any model is loaded
DECODE_COPIES = 6            # feature maps of the decoder's top level alive at its peak
ALLOCATOR_SLACK = 1.1        # freed blocks the heap keeps rather than returns (docs/BENCHMARKS.md: allocator)


class NotEnoughMemoryError(ValueError):
    """The machine has less memory free than a model needs to generate (``check_fits``)."""


@dataclass(frozen=True)
class Footprint:
    """What an official depth costs before it is loaded: its size, the memory to generate and a rough time."""
    depth: int
    var_params: int
    vqvae_params: int
    image_size: int
    batch: int                 # images generated at once (2 x batch rows with classifier-free guidance)
    memory_bytes: int
    seconds_per_image: float

    def summary(self) -> str:
        """One line: 'VAR-d16: 310 M parameters (+ 109 M tokenizer), 256 px; needs ~2.8 GB to generate 1 image in
        float32; ~4 s per image on 2 CPU cores (rough)'."""
        images = "1 image" if self.batch == 1 else f"{self.batch} images at once"
        return (f"VAR-d{self.depth}: {self.var_params / 1e6:,.0f} M parameters (+ {self.vqvae_params / 1e6:,.0f} M "
                f"tokenizer), {self.image_size} px; needs ~{self.memory_bytes / 2**30:.1f} GB to generate {images} "
                f"in float32; ~{self.seconds_per_image:.0f} s per image on 2 CPU cores (rough)")


@lru_cache(maxsize=16)
def parameter_counts(var_config: VARConfig, vqvae_config: VQVAEConfig) -> tuple[int, int]:
    """(VAR parameters, VQVAE parameters), exact: both models built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        vqvae = VQVAE(vqvae_config)
        var = VAR(var_config, vqvae)
    return sum(p.numel() for p in var.parameters()), sum(p.numel() for p in vqvae.parameters())


def per_token_matmul_flops(var_config: VARConfig) -> int:
    """2 x the weights every token goes through: per block q, k, v and output projections (4 C^2) and the MLP
    (2 mlp_ratio C^2), then the head (C V). The AdaLN layers act once per image, not per token."""
    C = var_config.embed_dim
    block_weights = 4 * C * C + 2 * round(var_config.mlp_ratio * C) * C
    return 2 * (var_config.depth * block_weights + C * var_config.vocab_size)


def transformer_flops_per_image(var_config: VARConfig) -> int:
    """FLOPs of one image's generation in the transformer, with classifier-free guidance (2 rows per image):
    2 (L x per-token matmuls + 4 C depth sum_k l_k L_k attention), l_k = pn_k^2 queries over L_k keys."""
    attention, seen = 0, 0
    for pn in var_config.patch_nums:
        seen += pn * pn
        attention += 4 * var_config.embed_dim * var_config.depth * pn * pn * seen
    return 2 * (var_config.L * per_token_matmul_flops(var_config) + attention)


def generation_memory_bytes(var_config: VARConfig, vqvae_config: VQVAEConfig, var_params: int, vqvae_params: int,
                            batch: int = 1) -> int:
    """Memory to generate ``batch`` images in float32 (4 bytes a value), with R = 2 batch rows (classifier-free
    guidance: a conditional and an unconditional row per image):

        weights      4 (P_var + P_vqvae)
      + KV cache     4 x 2 (keys, values) x depth x R x L x C
      + transformer  4 x R x l_K x (10 C + 4 V)       the last scale's l_K tokens: x, q, k, v, attention output,
                                                      the MLP's 4C hidden; logits, probabilities, sorted copies
      + decoder      4 x DECODE_COPIES x batch x ch x H x W      feature maps of its top level (ch channels, H = W
                                                                  the image side)
      + runtime      RUNTIME_BYTES (Python, torch, the app)

    times ALLOCATOR_SLACK. GB here are 2^30 bytes. Checked against docs/BENCHMARKS.md: d16 (1 image, as in the
    walkthrough) gives 2.76 GB, where the walkthrough's peak RSS with d16 loaded was measured at 2.65-3.1 GB.
    """
    rows, C = 2 * batch, var_config.embed_dim
    weights = 4 * (var_params + vqvae_params)
    kv_cache = 4 * 2 * var_config.depth * rows * var_config.L * C
    transformer = 4 * rows * var_config.patch_nums[-1] ** 2 * (10 * C + 4 * var_config.vocab_size)
    side = vqvae_config.image_size
    decoder = 4 * DECODE_COPIES * batch * vqvae_config.ch * side * side
    return round(ALLOCATOR_SLACK * (weights + kv_cache + transformer + decoder + RUNTIME_BYTES))


def official_footprint(depth: int, batch: int = 1) -> Footprint:
    """Size, memory to generate ``batch`` images in float32 (``generation_memory_bytes``) and a rough time per image
    of the official VAR-d``depth``, from its config alone (nothing is read or loaded).

    The time is d16's measured time per image scaled by FLOPs: the transformer part by
    ``transformer_flops_per_image`` (d / d16), the decode by the image's pixels (the same tokenizer at every depth).
    It holds for the benchmark machine (2 vCPUs, quiet); a busy or AVX2-only CPU takes several times longer.
    """
    name = f"d{depth}"
    if name not in OFFICIAL_FILES:
        raise ValueError(f"there is no official VAR-d{depth}; the official depths are {', '.join(official_depths())}")
    var_config = official_var(depth)
    vqvae_config = official_vqvae(var_config.patch_nums)
    var_params, vqvae_params = parameter_counts(var_config, vqvae_config)
    d16 = official_var(16)
    seconds = (D16_TRANSFORMER_S_PER_IMAGE * transformer_flops_per_image(var_config) / transformer_flops_per_image(d16)
               + D16_DECODE_S_PER_IMAGE * (vqvae_config.image_size / 256) ** 2)
    return Footprint(depth, var_params, vqvae_params, vqvae_config.image_size, batch,
                     generation_memory_bytes(var_config, vqvae_config, var_params, vqvae_params, batch), seconds)


def memory_refusal(footprint: Footprint, available: int | None) -> str | None:
    """Why ``footprint`` does not fit in ``available`` bytes, with what to do; None when it fits (or when the free
    memory is unknown)."""
    if available is None or footprint.memory_bytes <= available:
        return None
    smaller = [f"d{d}" for d in official_depths() if int(d) < footprint.depth
               and official_footprint(int(d), footprint.batch).memory_bytes <= available]
    instead = f"choose a smaller depth ({', '.join(smaller)})" if smaller else "no official depth fits now"
    return (f"VAR-d{footprint.depth} needs ~{footprint.memory_bytes / 2**30:.1f} GB of memory to generate "
            f"{'1 image' if footprint.batch == 1 else f'{footprint.batch} images'} in float32, but this machine has "
            f"only {available / 2**30:.1f} GB free: {instead}, generate fewer images at once, or close other "
            f"programs and loaded models to free memory")


def check_fits(depth: int, batch: int = 1) -> Footprint:
    """The footprint of VAR-d``depth`` (``official_footprint``) if it fits the memory free now
    (``available_memory_bytes``); raises NotEnoughMemoryError, which says what is needed, what is free and what to
    do, when it does not."""
    footprint = official_footprint(depth, batch)
    refusal = memory_refusal(footprint, available_memory_bytes())
    if refusal:
        raise NotEnoughMemoryError(refusal)
    return footprint

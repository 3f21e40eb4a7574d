"""Model configurations: plain frozen dataclasses and named presets.

Dimension key: V vocabulary (codebook size), Cv latent channels, C transformer width, K number of scales,
pn_k side of scale k's token map, L = sum_k pn_k^2 tokens in all.

The official ImageNet-256 models share one tokenizer (``vae_ch160v4096z32``) and differ only in depth d:
width C = 64 d, heads = d, drop-path rate 0.1 d / 24 (see ``official_var``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

OFFICIAL_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
OFFICIAL_PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)


@dataclass(frozen=True)
class VQVAEConfig:
    """The multi-scale residual VQVAE (tokenizer).

    The encoder downsamples by 2^(len(ch_mult)-1); the last patch_num must equal the latent side, so the
    image side is ``patch_nums[-1] * downsample``.
    """
    vocab_size: int = 4096            # V: one codebook shared by all scales
    z_channels: int = 32              # Cv: channels of the latent f and of every codebook vector
    ch: int = 160                     # base width of the conv nets
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    dropout: float = 0.0
    using_sa: bool = True             # self-attention at the lowest resolution
    using_mid_sa: bool = True         # self-attention in the middle block
    quant_conv_ks: int = 3
    beta: float = 0.25                # commitment-loss weight (training only)
    quant_resi: float = 0.5           # phi(x) = (1 - quant_resi) x + quant_resi conv(x)
    share_quant_resi: int = 4         # number of phi convs shared across the K scales
    patch_nums: tuple[int, ...] = OFFICIAL_PATCH_NUMS
    in_channels: int = 3

    def __post_init__(self):
        if self.ch % 32 or any((self.ch * m) % 32 for m in self.ch_mult):
            raise ValueError(f"every conv width ch*ch_mult must be a multiple of 32 (GroupNorm(32)); got ch={self.ch}, "
                             f"ch_mult={self.ch_mult}")
        if list(self.patch_nums) != sorted(set(self.patch_nums)):
            raise ValueError(f"patch_nums must be strictly increasing; got {self.patch_nums}")
        if self.share_quant_resi < 1:
            raise ValueError(f"share_quant_resi must be >= 1 (number of phi convs); got {self.share_quant_resi}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * self.downsample


@dataclass(frozen=True)
class VARConfig:
    """The next-scale-prediction transformer. ``vocab_size``/``z_channels``/``patch_nums`` must match the VQVAE."""
    vocab_size: int = 4096
    z_channels: int = 32
    patch_nums: tuple[int, ...] = OFFICIAL_PATCH_NUMS
    num_classes: int = 1000           # class index num_classes is the "unconditional" class used by CFG
    depth: int = 16
    embed_dim: int = 1024             # C
    num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    shared_aln: bool = False          # d36: one AdaLN linear shared by all blocks + a per-block learned offset
    cond_drop_rate: float = 0.1       # class-label dropout during training (enables classifier-free guidance)
    drop_path_rate: float = 0.0       # stochastic depth during training, linearly increasing over blocks

    def __post_init__(self):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")

    @property
    def L(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)

    @property
    def begin_ends(self) -> list[tuple[int, int]]:
        """Token range [begin, end) of every scale inside the flattened sequence of L tokens."""
        out, cur = [], 0
        for pn in self.patch_nums:
            out.append((cur, cur + pn * pn))
            cur += pn * pn
        return out


def official_vqvae(patch_nums: tuple[int, ...] = OFFICIAL_PATCH_NUMS) -> VQVAEConfig:
    """``vae_ch160v4096z32.pth``: V=4096, Cv=32, ch=160, 4 partially shared phi convs."""
    return VQVAEConfig(patch_nums=patch_nums)


def official_var(depth: int, shared_aln: bool | None = None, patch_nums: tuple[int, ...] | None = None) -> VARConfig:
    """``var_d{depth}.pth``: width 64*depth, depth heads, drop-path 0.1*depth/24 (upstream ``build_vae_var``).

    d36 is the 512-px model: shared AdaLN and patch_nums (1,2,3,4,6,9,13,18,24,32).
    """
    if shared_aln is None:
        shared_aln = depth == 36
    if patch_nums is None:
        patch_nums = OFFICIAL_PATCH_NUMS_512 if depth == 36 else OFFICIAL_PATCH_NUMS
    return VARConfig(depth=depth, embed_dim=64 * depth, num_heads=depth, shared_aln=shared_aln,
                     drop_path_rate=0.1 * depth / 24, patch_nums=patch_nums)


@dataclass(frozen=True)
class Preset:
    name: str
    vqvae: VQVAEConfig
    var: VARConfig
    note: str = field(default="", compare=False)


def _tiny() -> Preset:
    """The config of the upstream reference set ``upstream_tiny`` (64-px images, 4x4 latent, 4 scales)."""
    vq = VQVAEConfig(vocab_size=64, z_channels=8, ch=32, patch_nums=(1, 2, 3, 4))
    var = VARConfig(vocab_size=64, z_channels=8, patch_nums=(1, 2, 3, 4), num_classes=10, depth=2,
                    embed_dim=128, num_heads=2)
    return Preset("tiny", vq, var, "upstream_tiny reference config")


def _official(depth: int) -> Preset:
    var = official_var(depth)
    return Preset(f"d{depth}", official_vqvae(var.patch_nums), var, f"official var_d{depth}.pth")


PRESETS: dict[str, Preset] = {p.name: p for p in [_tiny()] + [_official(d) for d in (16, 20, 24, 30, 36)]}


def get_preset(name: str) -> Preset:
    """Look a preset up by name (``tiny``, ``d16`` ... ``d36``, and the built-in training presets)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


# ------------------------------------------------------------------------------------- presets trained by varlite
SHAPES_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8)      # 32-px images, 8x8 latent: L = 155 tokens


def _shapes() -> Preset:
    """The built-in model (``varlite/weights/shapes.safetensors``): Shapes 32x32, 10 classes, trains on a CPU in
    minutes."""
    vq = VQVAEConfig(vocab_size=256, z_channels=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, using_sa=False,
                     using_mid_sa=False, patch_nums=SHAPES_PATCH_NUMS)
    var = VARConfig(vocab_size=256, z_channels=32, patch_nums=SHAPES_PATCH_NUMS, num_classes=10, depth=4,
                    embed_dim=128, num_heads=4)
    return Preset("shapes", vq, var, "built-in: synthetic Shapes, 32x32, 10 classes")


# The CPU-first CIFAR-10 recipe: an 8x8 latent with Shapes' 7 scales (L = 155 tokens, a third of the
# 16x16 latent's 507), so the transformer sees three times more images per CPU-second. The transformer candidates
# of the recipe ablation (equal CPU budget, see varlite/weights/cifar10.md) share this tokenizer.
def _cifar10_vqvae() -> VQVAEConfig:
    return VQVAEConfig(vocab_size=1024, z_channels=32, ch=64, ch_mult=(1, 2, 2), num_res_blocks=1, using_sa=False,
                       using_mid_sa=True, patch_nums=SHAPES_PATCH_NUMS)


CIFAR10_CANDIDATES = {          # name: (depth, width C, heads); head dim 64
    "cifar10-s": (4, 192, 3),
    "cifar10-m": (6, 256, 4),
    "cifar10-l": (8, 384, 6),
}


def _cifar10_candidate(name: str) -> Preset:
    depth, width, heads = CIFAR10_CANDIDATES[name]
    var = VARConfig(vocab_size=1024, z_channels=32, patch_nums=SHAPES_PATCH_NUMS, num_classes=10, depth=depth,
                    embed_dim=width, num_heads=heads)
    return Preset(name, _cifar10_vqvae(), var, f"CIFAR-10 recipe candidate: depth {depth}, width {width}")


def _cifar10() -> Preset:
    """``varlite/weights/cifar10.safetensors``: the recipe's winner (the configs of ``cifar10-s``), trained on a 2-core
    CPU in about two hours; see its model card."""
    candidate = _cifar10_candidate("cifar10-s")
    return Preset("cifar10", candidate.vqvae, candidate.var, "built-in: CIFAR-10, 32x32, 10 classes")


def _cifar10_fast() -> Preset:
    """The one-CPU-hour schedule of the CIFAR-10 recipe (``SCHEDULE=fast``): the ``cifar10-s`` transformer on a
    tokenizer of half the width (ch 32: a quarter of the conv work, 3.4x the training images per second on a 2-core
    CPU and 3.4x faster encoding), the only change from ``cifar10-s``."""
    candidate = _cifar10_candidate("cifar10-s")
    vq = replace(candidate.vqvae, ch=32)
    return Preset("cifar10-fast", vq, candidate.var, "CIFAR-10 one-CPU-hour recipe: cifar10-s on a ch-32 tokenizer")


PRESETS.update({name: _cifar10_candidate(name) for name in CIFAR10_CANDIDATES})
PRESETS.update({p.name: p for p in (_shapes(), _cifar10(), _cifar10_fast())})

"""The baselines VAR is compared with in the paper, small: raster-order AR and independent per-scale tokens.

Dimension key: B batch (2B: doubled for classifier-free guidance), L tokens of a sequence, l tokens of one scale,
C width, Cv latent channels, V vocabulary, K scales, H,W latent side, h,w one scale's side, N parameters.

1. ``RasterAR``: the paper's AR baseline (Table 3, first row). A single-scale tokenizer (a VQVAE whose only scale
   is the finest, ``patch_nums = (H,)``) turns an image into H*W tokens r_1..r_L in raster order (row by row);
   a decoder-only transformer predicts each token from the ones before it:

       p(r_1..r_L | c) = prod_i p(r_i | r_<i, c)          (causal mask: token i attends to tokens j <= i)

   Input of position i: the start token (class embedding) for i = 1, else the codebook vector e[r_{i-1}] through
   the same ``word_embed`` (Cv -> C) VAR uses. Its blocks, AdaLN conditioning, head and initialisation are VAR's
   (``varlite.core.transformer``), so at equal depth and width the two models differ only in what a position sees and
   predicts, and in their position tables (L = 64 here against VAR's 155). Generation takes L steps, one token each,
   with the same KV cache, guidance (its strength ramps over the L positions as VAR's ramps over the K scales),
   top-k / top-p as ``VAR.generate``.

2. ``IndependentScaleQuantizer``: the alternative to residual quantization that Sec. 3.2 of the paper argues
   against. Every scale quantizes the downsampled latent f itself, not the rest f - f_hat:

       target_k = area_downsample(f, pn_k),   r_k = argmin_v ||target_k - e_v||,   f_hat_k = phi_k(upsample(e[r_k]))

   so f_hat_k is scale k's own approximation of f (not a sum over scales), the decoder sees f_hat_K only, and the
   transformer's input for scale k+1 is f_hat_k downsampled to pn_{k+1}. The K token maps hold the same number of
   tokens as the residual ones, but the coarse ones repeat, at a lower resolution, what the finest says.
   ``VAR.generate`` adds contributions (the residual rule); sample a VAR on these tokens with
   ``sample_by_refeeding``, which only uses ``idx_to_var_input`` and so works for either quantizer.

3. ``fit_power_law``: the straight line through (log N, log loss) of the scaling-law figure, with its correlation.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .core import sampling
from .core.configs import VARConfig, VQVAEConfig
from .core.quantizer import MultiScaleQuantizer
from .core.trace import EncodeStep
from .core.transformer import AdaLNBeforeHead, AdaLNSelfAttn, KVCache
from .core.var import VAR
from .core.vqvae import VQVAE


# ---------------------------------------------------------------------------------------------------- 1. raster AR
def causal_bias(L: int) -> torch.Tensor:
    """(1, 1, L, L) float: 0 where key j <= query i, -inf elsewhere (the raster-order mask)."""
    i_L1 = torch.arange(L).view(-1, 1)
    return torch.where(i_L1 >= i_L1.T, 0.0, -torch.inf).view(1, 1, L, L)


class RasterAR(nn.Module):
    """Class-conditional next-token prediction over the raster-ordered tokens of a single-scale tokenizer.

    ``config`` is a ``VARConfig`` whose ``patch_nums`` is the single scale ``(H,)``, so L = H * H. Like ``VAR`` it
    holds a plain reference to its VQVAE (not a submodule).
    """

    def __init__(self, config: VARConfig, vqvae: VQVAE):
        super().__init__()
        if len(config.patch_nums) != 1 or tuple(vqvae.config.patch_nums) != tuple(config.patch_nums):
            raise ValueError(f"RasterAR needs a single-scale tokenizer and config (patch_nums=(H,)); got config "
                             f"patch_nums={config.patch_nums}, tokenizer patch_nums={vqvae.config.patch_nums}")
        if (config.vocab_size, config.z_channels) != (vqvae.config.vocab_size, vqvae.config.z_channels):
            raise ValueError(f"config (V={config.vocab_size}, Cv={config.z_channels}) does not match the tokenizer "
                             f"(V={vqvae.config.vocab_size}, Cv={vqvae.config.z_channels})")
        self.config = config
        object.__setattr__(self, "vqvae", vqvae)
        C, self.L, self.num_classes = config.embed_dim, config.L, config.num_classes
        self.side = config.patch_nums[0]
        self.pos_start = nn.Parameter(torch.zeros(1, 1, C))          # added to the start token
        self.pos_1LC = nn.Parameter(torch.zeros(1, self.L, C))       # absolute position of every token
        self.register_buffer("attn_bias_for_masking", causal_bias(self.L))
        self.word_embed = nn.Linear(config.z_channels, C)             # e[r_{i-1}] -> width C
        self.class_emb = nn.Embedding(config.num_classes + 1, C)      # + the "unconditional" class
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(i, C, config.num_heads, config.mlp_ratio, config.norm_eps, False)
            for i in range(config.depth)])
        self.head_nm = AdaLNBeforeHead(C, config.norm_eps)
        self.head = nn.Linear(C, config.vocab_size)

    def init_weights(self) -> None:
        """VAR's initialisation (``VAR.init_weights`` reads only the parts both models have under the same names)."""
        VAR.init_weights(self)

    def token_inputs(self, idx_BL: torch.Tensor) -> torch.Tensor:
        """word_embed(e[r_i]) for the given tokens: (B, n) -> (B, n, C). Codebook vectors of the frozen tokenizer."""
        return self.word_embed(self.vqvae.quantize.embedding(idx_BL).detach())

    def forward(self, labels_B: torch.Tensor, idx_BL: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V): position i sees the start token and r_1..r_{i-1}, and predicts r_i.
        In training mode labels are replaced by the unconditional class with probability ``cond_drop_rate``."""
        B = idx_BL.shape[0]
        if self.training and self.config.cond_drop_rate > 0:
            drop_B = torch.rand(B, device=labels_B.device) < self.config.cond_drop_rate
            labels_B = torch.where(drop_B, self.num_classes, labels_B)
        cond_BD = self.class_emb(labels_B)
        start_B1C = cond_BD.unsqueeze(1) + self.pos_start
        x_BLC = torch.cat((start_B1C, self.token_inputs(idx_BL[:, :-1])), dim=1) + self.pos_1LC
        for block in self.blocks:
            x_BLC = block(x_BLC, cond_BD, attn_bias=self.attn_bias_for_masking)
        return self.head(self.head_nm(x_BLC, cond_BD))

    @torch.inference_mode()
    def generate(self, labels, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
                 seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, Hi, Wi) in [0, 1] and their tokens (B, L), sampled one token at a time in raster order
        (L forward passes of one position each, with a KV cache). Guidance at position i: t = cfg * i / (L - 1)."""
        labels_B = torch.as_tensor(labels, device=self.pos_1LC.device).long().view(-1)
        B = labels_B.shape[0]
        generator = sampling.seeded_generator(seed, self.pos_1LC.device)
        labels_2B = torch.cat((labels_B, torch.full_like(labels_B, self.num_classes)))
        cond_2BD = self.class_emb(labels_2B)
        x_2B1C = cond_2BD.unsqueeze(1) + self.pos_start + self.pos_1LC[:, :1]
        kv_cache = KVCache(len(self.blocks))
        idx_BL = labels_B.new_zeros(B, self.L)
        for i in range(self.L):
            for block in self.blocks:
                x_2B1C = block(x_2B1C, cond_2BD, kv_cache=kv_cache)
            logits_B1V = sampling.guide(self.head(self.head_nm(x_2B1C, cond_2BD)), sampling.cfg_strength(cfg, i, self.L))
            idx_B1 = sampling.sample_tokens(sampling.filter_top_k_top_p(logits_B1V, top_k, top_p), generator)
            idx_BL[:, i] = idx_B1[:, 0]
            if i + 1 < self.L:
                x_2B1C = (self.token_inputs(idx_B1) + self.pos_1LC[:, i + 1:i + 2]).repeat(2, 1, 1)
        images = self.vqvae.idx_to_img([idx_BL]).add(1).mul(0.5)
        return images, idx_BL


# ---------------------------------------------------------------------------------------------------- training steps
def ar_loss(model: RasterAR, labels_B: torch.Tensor, idx_BL: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of next-token prediction over the B * L raster positions."""
    logits_BLV = model(labels_B, idx_BL)
    return F.cross_entropy(logits_BLV.flatten(0, 1), idx_BL.flatten(), label_smoothing=label_smoothing)


def var_loss(var: VAR, labels_B: torch.Tensor, idx_BL: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of next-scale prediction over the B * L tokens of all scales (teacher forcing: the input
    of scale k+1 is built from the true r_1..r_k by the tokenizer's ``idx_to_var_input``)."""
    ms_idx_Bl = [idx_BL[:, b:e] for b, e in var.begin_ends]
    with torch.no_grad():
        x_BLCv = var.vqvae.idx_to_var_input(ms_idx_Bl)
    logits_BLV = var(labels_B, x_BLCv)
    return F.cross_entropy(logits_BLV.flatten(0, 1), idx_BL.flatten(), label_smoothing=label_smoothing)


# ---------------------------------------------------------------------------------------------------- 2. independent
class IndependentScaleQuantizer(MultiScaleQuantizer):
    """Multi-scale quantization without the rest: each scale approximates f on its own (module docstring, 2).

    Same parameters (codebook, phi convs) and state-dict names as ``MultiScaleQuantizer``; only the rule of what
    each scale quantizes and what f_hat is changes. ``forward`` (the training loss) is inherited and, since it reads
    every step's f_hat, trains every scale's own approximation towards f.
    """

    def residual_steps(self, f_BCvHW: torch.Tensor) -> Iterator[EncodeStep]:
        """One ``EncodeStep`` per scale; here target = down(f), f_hat = this scale's contribution, rest = f - f_hat.
        (The name is the base class's, so the tokenizer and its trainer call it unchanged.)"""
        B, Cv, H, W = f_BCvHW.shape
        if (H, W) != (self.patch_nums[-1],) * 2:
            raise ValueError(f"latent is {H}x{W} but the last patch num is {self.patch_nums[-1]}")
        K = self.num_scales
        for si, pn in enumerate(self.patch_nums):
            target_BCvhw = F.interpolate(f_BCvHW, size=(pn, pn), mode="area") if si != K - 1 else f_BCvHW
            idx_Bhw = self.nearest_code(target_BCvhw.detach().permute(0, 2, 3, 1).reshape(-1, Cv)).view(B, pn, pn)
            emb_BCvhw = self.embedding(idx_Bhw).permute(0, 3, 1, 2).contiguous()
            f_hat_BCvHW = self.upsample_and_phi(emb_BCvhw, si)
            yield EncodeStep(scale=si, pn=pn, num_scales=K, vocab_size=self.vocab_size, target=target_BCvhw.detach(),
                             tokens=idx_Bhw, embedding=emb_BCvhw, contribution=f_hat_BCvHW, f_hat=f_hat_BCvHW,
                             rest=f_BCvHW.detach() - f_hat_BCvHW)

    def idx_to_f_hats(self, ms_idx_Bl: list[torch.Tensor]) -> list[torch.Tensor]:
        """f_hat_k = phi_k(upsample(e[r_k])) for every given scale: each decodes on its own."""
        return [self.upsample_and_phi(self.lookup(idx_Bl, self.patch_nums[si]), si)
                for si, idx_Bl in enumerate(ms_idx_Bl)]

    def idx_to_var_input(self, ms_idx_Bl: list[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input (B, L - pn_1^2, Cv): scale si's tokens see f_hat_{si-1} (the previous scale's own
        approximation) area-downsampled to pn_si."""
        f_hats = self.idx_to_f_hats(ms_idx_Bl[:-1])
        return torch.cat([self.input_for_scale(f_hat_BCvHW, si + 1) for si, f_hat_BCvHW in enumerate(f_hats)], dim=1)


def independent_vqvae(config: VQVAEConfig) -> VQVAE:
    """A VQVAE (same encoder, decoder and parameter names) whose quantizer is ``IndependentScaleQuantizer``."""
    vqvae = VQVAE(config)
    vqvae.quantize = IndependentScaleQuantizer(config)
    return vqvae


@torch.inference_mode()
def sample_by_refeeding(var: VAR, labels, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
                        seed: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sample a VAR scale by scale without a KV cache: at scale si, run the teacher-forced forward pass on the
    tokens sampled so far (later scales zero: the block-causal mask hides them) and sample r_si from its logits.

    Costs K full passes instead of one cached pass, but uses the tokenizer only through ``idx_to_var_input`` and
    ``idx_to_img``, so it samples a VAR trained on either quantizer. With the same seed it draws the same random
    numbers in the same order as ``VAR.generate`` (no smoothing, no overrides). Returns (images in [0, 1], tokens).
    """
    was_training = var.training
    var.eval()
    labels_B = var.check_labels(labels)
    B, K = labels_B.shape[0], len(var.patch_nums)
    generator = sampling.seeded_generator(seed, labels_B.device)
    labels_2B = torch.cat((labels_B, torch.full_like(labels_B, var.num_classes)))
    ms_idx_Bl = [labels_B.new_zeros(B, pn * pn) for pn in var.patch_nums]
    for si in range(K):
        x_2BLCv = var.vqvae.idx_to_var_input(ms_idx_Bl).repeat(2, 1, 1)
        begin, end = var.begin_ends[si]
        logits_BlV = sampling.guide(var(labels_2B, x_2BLCv)[:, begin:end], sampling.cfg_strength(cfg, si, K))
        ms_idx_Bl[si] = sampling.sample_tokens(sampling.filter_top_k_top_p(logits_BlV, top_k, top_p), generator)
    var.train(was_training)
    return var.vqvae.idx_to_img(ms_idx_Bl).add(1).mul(0.5), ms_idx_Bl


# ---------------------------------------------------------------------------------------------------- 3. the fit
@dataclass(frozen=True)
class PowerLawFit:
    """loss ~= a * N^b, fitted as a straight line log loss = log a + b log N; r: Pearson correlation of the logs."""
    a: float
    b: float
    r: float

    def predict(self, n_params: float) -> float:
        return self.a * n_params ** self.b


def fit_power_law(n_params: Sequence[float], losses: Sequence[float]) -> PowerLawFit:
    """Least-squares line through (log N, log loss) and the correlation r of those points (needs >= 2 distinct N)."""
    if len(n_params) != len(losses) or len(n_params) < 2:
        raise ValueError(f"need as many losses as parameter counts, at least 2; got {len(n_params)} and {len(losses)}")
    if min(n_params) <= 0 or min(losses) <= 0:
        raise ValueError("parameter counts and losses must be positive (the fit is in log space)")
    x = torch.tensor([math.log(n) for n in n_params], dtype=torch.float64)
    y = torch.tensor([math.log(v) for v in losses], dtype=torch.float64)
    dx, dy = x - x.mean(), y - y.mean()
    if float(dx.square().sum()) == 0:
        raise ValueError("all parameter counts are equal: a slope needs at least two different model sizes")
    b = float((dx * dy).sum() / dx.square().sum())
    a = math.exp(float(y.mean()) - b * float(x.mean()))
    r = float((dx * dy).sum() / (dx.square().sum() * dy.square().sum()).sqrt())
    return PowerLawFit(a=a, b=b, r=r)


def save_raster_ar(path, model: RasterAR) -> None:
    """One small file with the AR model and its single-scale tokenizer: configs and float16 weights."""
    half = lambda module: {k: v.half() if v.is_floating_point() else v for k, v in module.state_dict().items()}
    torch.save({"vqvae_config": dataclasses.asdict(model.vqvae.config), "config": dataclasses.asdict(model.config),
                "vqvae": half(model.vqvae), "model": half(model)}, path)


def load_raster_ar(path) -> RasterAR:
    """The (tokenizer, AR model) pair of ``save_raster_ar``, float32, in eval mode (read with weights_only)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    vqvae = VQVAE(VQVAEConfig(**blob["vqvae_config"]))
    vqvae.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["vqvae"].items()})
    model = RasterAR(VARConfig(**blob["config"]), vqvae.eval())
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["model"].items()})
    return model.eval()


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def timed(fn, *args, **kwargs) -> tuple[object, float, float]:
    """(fn(*args, **kwargs), wall seconds, CPU seconds of this process) -- for generation timings."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall0, time.process_time() - cpu0

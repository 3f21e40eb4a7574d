"""VAR: a class-conditional transformer that predicts an image's token maps coarse to fine, one scale per step.

Dimension key: B batch, L all tokens (sum of pn_k^2), l tokens of one scale, C width, Cv latent channels,
V vocabulary, K scales, H,W final latent side, h,w one scale's side.

Input sequence (teacher forcing, VAR paper Sec. 3):
- scale 1 (pn_1^2 = 1 token): the start token  s = class_emb[label] + pos_start;
- scale k+1: the f_hat built from scales 1..k, area-downsampled to pn_{k+1}, through ``word_embed`` (Cv -> C);
- every token adds its absolute position embedding ``pos_1LC`` and the embedding of its scale ``lvl_embed``.
Block-causal mask: token i may attend to token j iff scale(j) <= scale(i), so all tokens of one scale are
predicted together from the coarser scales (and from each other's inputs, which are already known).
Output: logits over the V codebook entries for every position; training is cross-entropy against r_1..r_K.

Generation runs the same network one scale at a time with a KV cache (``generate_steps``): sample r_k, add
phi_k(upsample(e[r_k])) to f_hat, downsample f_hat to the next side, embed it as the next scale's input.
Classifier-free guidance doubles the batch: rows B.. carry the "unconditional" class ``num_classes``.
"""
from __future__ import annotations

import math
import time
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import sampling
from .configs import VARConfig
from .trace import ScaleStep
from .transformer import AdaLNBeforeHead, AdaLNSelfAttn, KVCache, SharedAdaLin
from .vqvae import VQVAE


def scale_index_of_tokens(patch_nums: Sequence[int]) -> torch.Tensor:
    """(1, L) int64: the scale index of every token in the flattened sequence."""
    return torch.cat([torch.full((pn * pn,), si) for si, pn in enumerate(patch_nums)]).view(1, -1)


def block_causal_bias(patch_nums: Sequence[int]) -> torch.Tensor:
    """(1, 1, L, L) float: 0 where scale(key) <= scale(query), -inf elsewhere."""
    lvl_L = scale_index_of_tokens(patch_nums)[0]
    return torch.where(lvl_L.view(-1, 1) >= lvl_L.view(1, -1), 0.0, -torch.inf).view(1, 1, lvl_L.numel(), -1)


class VAR(nn.Module):
    """The next-scale-prediction transformer. Holds a reference to its VQVAE (not a submodule: like the official
    files, VAR's state_dict has only its own weights)."""

    def __init__(self, cfg: VARConfig, vqvae: VQVAE):
        super().__init__()
        vq_cfg = vqvae.config
        if (cfg.vocab_size, cfg.z_channels, tuple(cfg.patch_nums)) != (vq_cfg.vocab_size, vq_cfg.z_channels, tuple(vq_cfg.patch_nums)):
            raise ValueError(f"VAR config (V={cfg.vocab_size}, Cv={cfg.z_channels}, patch_nums={cfg.patch_nums}) does not "
                             f"match the VQVAE (V={vq_cfg.vocab_size}, Cv={vq_cfg.z_channels}, patch_nums={vq_cfg.patch_nums})")
        self.config = cfg
        object.__setattr__(self, "vqvae", vqvae)   # a plain reference: not registered as a submodule
        C, patch_nums = cfg.embed_dim, tuple(cfg.patch_nums)
        self.patch_nums, self.num_classes = patch_nums, cfg.num_classes
        self.L, self.first_l = cfg.L, patch_nums[0] ** 2
        self.begin_ends = cfg.begin_ends

        # parameters, in the official order and with the official names
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, C))      # position of the start token(s)
        self.pos_1LC = nn.Parameter(torch.zeros(1, self.L, C))              # absolute position of every token
        self.register_buffer("lvl_1L", scale_index_of_tokens(patch_nums))
        self.register_buffer("attn_bias_for_masking", block_causal_bias(patch_nums))
        self.word_embed = nn.Linear(cfg.z_channels, C)                       # f_hat features -> width C
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)               # + the "unconditional" class
        self.lvl_embed = nn.Embedding(len(patch_nums), C)                   # which scale a token belongs to
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), SharedAdaLin(C, 6 * C)) if cfg.shared_aln else nn.Identity()
        drop_path = torch.linspace(0, cfg.drop_path_rate, cfg.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(i, C, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps, cfg.shared_aln, drop_path[i])
            for i in range(cfg.depth)])
        self.head_nm = AdaLNBeforeHead(C, cfg.norm_eps)
        self.head = nn.Linear(C, cfg.vocab_size)

    # ------------------------------------------------------------------------------------------ shared pieces
    def logits(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """head(AdaLN(x)): (B, L, C) -> (B, L, V)."""
        return self.head(self.head_nm(x_BLC, cond_BD))

    def check_labels(self, labels) -> torch.Tensor:
        """Labels as a (B,) int64 tensor on the model's device; 0..num_classes-1, or num_classes = unconditional."""
        labels_B = torch.as_tensor(labels, device=self.lvl_1L.device)
        if labels_B.ndim == 0:
            labels_B = labels_B.view(1)
        if labels_B.ndim != 1 or labels_B.numel() == 0 or labels_B.is_floating_point():
            raise ValueError(f"labels must be a non-empty 1-D sequence of ints; got {labels!r}")
        bad = labels_B[(labels_B < 0) | (labels_B > self.num_classes)]
        if bad.numel():
            raise ValueError(f"label {int(bad[0])} is out of range: this model has {self.num_classes} classes "
                             f"(0..{self.num_classes - 1}, and {self.num_classes} for 'unconditional')")
        return labels_B.long()

    # ------------------------------------------------------------------------------------------ training
    def forward(self, labels_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) for all scales at once, under the block-causal mask.

        ``x_BLCv_wo_first_l`` is ``vqvae.idx_to_var_input(tokens)``. In training mode each label is replaced by
        the unconditional class with probability ``cond_drop_rate`` (this is what makes CFG possible).
        """
        B = x_BLCv_wo_first_l.shape[0]
        if self.training and self.config.cond_drop_rate > 0:
            drop_B = torch.rand(B, device=labels_B.device) < self.config.cond_drop_rate
            labels_B = torch.where(drop_B, self.num_classes, labels_B)
        sos = cond_BD = self.class_emb(labels_B)
        sos = sos.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
        x_BLC = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
        x_BLC = x_BLC + (self.lvl_embed(self.lvl_1L.expand(B, -1)) + self.pos_1LC)
        cond_BD_or_gss = self.shared_ada_lin(cond_BD)
        for block in self.blocks:
            x_BLC = block(x_BLC, cond_BD_or_gss, attn_bias=self.attn_bias_for_masking)
        return self.logits(x_BLC, cond_BD)

    @torch.no_grad()
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02,
                     init_std: float = -1.0) -> None:
        """Upstream's initialisation for training from scratch: truncated normal (std sqrt(1/3C) when init_std < 0),
        small head, residual projections scaled by 1/sqrt(2 depth), AdaLN gates near zero."""
        std = math.sqrt(1 / self.config.embed_dim / 3) if init_std < 0 else init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, std=std)
        self.head.weight.mul_(init_head)
        self.head.bias.zero_()
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        self.head_nm.ada_lin[-1].bias.zero_()
        C = self.config.embed_dim
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * len(self.blocks)))
            block.ffn.fc2.weight.div_(math.sqrt(2 * len(self.blocks)))
            if block.shared_aln:
                block.ada_gss[:, :, 2:].mul_(init_adaln)
                block.ada_gss[:, :, :2].mul_(init_adaln_gamma)
            else:
                block.ada_lin[-1].weight[2 * C:].mul_(init_adaln)
                block.ada_lin[-1].weight[:2 * C].mul_(init_adaln_gamma)
                block.ada_lin[-1].bias.zero_()

    # ------------------------------------------------------------------------------------------ generation
    def check_sampling_args(self, cfg: float, top_k: int, top_p: float) -> None:
        V = self.config.vocab_size
        if not cfg >= 0:
            raise ValueError(f"cfg must be >= 0 (0 = no guidance; 1.5-4 are typical); got {cfg}")
        if not (isinstance(top_k, int) and 0 <= top_k <= V):
            raise ValueError(f"top_k must be an int in [0, {V}] (0 = off, V = vocabulary size); got {top_k!r}")
        if not 0 <= top_p <= 1:
            raise ValueError(f"top_p must be in [0, 1] (0 = off); got {top_p}")

    @torch.inference_mode()
    def decode_f_hat(self, f_hat_BCvHW: torch.Tensor) -> torch.Tensor:
        """The image decoded from f_hat, mapped from [-1, 1] to [0, 1] (as generation returns images)."""
        return self.vqvae.f_hat_to_img(f_hat_BCvHW).add_(1).mul_(0.5)

    @torch.inference_mode()
    def generate_steps(self, labels, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False,
                       seed: int | None = None, generator: torch.Generator | None = None, trace: bool = False,
                       capture_attention: bool = False, num_candidates: int = 5,
                       overrides: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> Iterator[ScaleStep]:
        """Generate images for ``labels`` one scale at a time, yielding a ``ScaleStep`` after each scale.

        cfg: guidance strength (ramped linearly over scales); top_k/top_p: filters (0 = off); more_smooth: Gumbel
        smoothing; seed (or a ready ``generator``): the only source of randomness, so equal seeds give equal images.
        trace: also compute per-position probabilities, entropy and the ``num_candidates`` best tokens.
        capture_attention: record every layer's attention probabilities for this scale's queries.
        overrides: {scale: (tokens (B, h, w), keep (B, h, w) bool)}: at that scale, positions where ``keep`` is
        True take the given tokens instead of sampled ones (token surgery and zero-shot editing).
        """
        labels_B = self.check_labels(labels)
        self.check_sampling_args(cfg, top_k, top_p)
        B, K, device = labels_B.shape[0], len(self.patch_nums), self.lvl_1L.device
        bad_scales = sorted(k for k in (overrides or {}) if not (isinstance(k, int) and 0 <= k < K))
        if bad_scales:
            raise ValueError(f"overrides: scale keys must be ints in [0, {K - 1}] (this model has {K} scales); "
                             f"got {bad_scales}")
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2 ** 62, ()).item()))
        quantizer = self.vqvae.quantize
        Cv, H = quantizer.Cv, self.patch_nums[-1]

        labels_2B = torch.cat((labels_B, torch.full_like(labels_B, self.num_classes)))   # conditional, unconditional
        sos = cond_BD = self.class_emb(labels_2B)
        cond_BD_or_gss = self.shared_ada_lin(cond_BD)
        lvl_pos = self.lvl_embed(self.lvl_1L) + self.pos_1LC
        x_BlC = (sos.unsqueeze(1).expand(2 * B, self.first_l, -1) + self.pos_start.expand(2 * B, self.first_l, -1)
                 + lvl_pos[:, :self.first_l])
        kv_cache = KVCache(len(self.blocks))
        f_hat = sos.new_zeros(B, Cv, H, H)

        for si, pn in enumerate(self.patch_nums):
            begin, end = self.begin_ends[si]
            t_start = time.perf_counter()
            attn_weights = [] if capture_attention else None
            for block in self.blocks:
                x_BlC = block(x_BlC, cond_BD_or_gss, attn_bias=None, kv_cache=kv_cache, attn_weights_out=attn_weights)
            raw_logits = self.logits(x_BlC, cond_BD)
            t = sampling.cfg_strength(cfg, si, K)
            logits_BlV = sampling.guide(raw_logits, t)
            t_transformer = time.perf_counter()

            filtered_BlV = sampling.filter_top_k_top_p(logits_BlV, top_k, top_p)
            idx_Bl = sampling.sample_tokens(filtered_BlV, generator)
            if more_smooth:
                tau, sharpen = sampling.smoothing_temperature(si, K), 1 + si / (K - 1)
                emb_BlCv = sampling.gumbel_softmax(filtered_BlV.mul(sharpen), tau, generator) @ quantizer.embedding.weight.unsqueeze(0)
            else:
                emb_BlCv = quantizer.embedding(idx_Bl)
            if overrides and si in overrides:
                idx_Bl, emb_BlCv = self._apply_override(si, idx_Bl, emb_BlCv, *overrides[si])
            t_sampling = time.perf_counter()

            emb_BCvhw = emb_BlCv.transpose(1, 2).reshape(B, Cv, pn, pn)
            residual = quantizer.upsample_and_phi(emb_BCvhw, si)
            f_hat = f_hat + residual
            if si != K - 1:   # the next scale's input: f_hat seen at the next side, embedded, for both CFG halves
                pn_next = self.patch_nums[si + 1]
                next_BlCv = F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").view(B, Cv, -1).transpose(1, 2)
                x_BlC = (self.word_embed(next_BlCv) + lvl_pos[:, end:end + pn_next * pn_next]).repeat(2, 1, 1)
            t_quantizer = time.perf_counter()

            step = ScaleStep(
                scale=si, side=pn, num_scales=K, cfg=t, tokens=idx_Bl.view(B, pn, pn), embedding=emb_BCvhw,
                contribution=residual, f_hat=f_hat, logits=logits_BlV, raw_logits=raw_logits,
                begin=begin, end=end, total_tokens=self.L, decoder=self.decode_f_hat,
                timings={"transformer": t_transformer - t_start, "sampling": t_sampling - t_transformer,
                         "quantizer": t_quantizer - t_sampling})
            if capture_attention:   # conditional rows only; clone so the unconditional half is freed
                step.attention = [w[:B].clone() for w in attn_weights]
            yield step

    def _apply_override(self, si, idx_Bl, emb_BlCv, tokens_Bhw, keep_Bhw):
        """Replace sampled tokens by given ones where ``keep`` is True (and their codebook vectors likewise)."""
        B, l = idx_Bl.shape
        side = self.patch_nums[si]
        tokens, keep = torch.as_tensor(tokens_Bhw, device=idx_Bl.device), torch.as_tensor(keep_Bhw, device=idx_Bl.device)
        for name, t in (("tokens", tokens), ("keep", keep)):
            if tuple(t.shape[-2:]) != (side, side) or t.ndim not in (2, 3) or (t.ndim == 3 and t.shape[0] not in (1, B)):
                raise ValueError(f"override at scale {si}: {name} must have shape ({side}, {side}) or (B, {side}, "
                                 f"{side}) with B = 1 or {B}; got {tuple(t.shape)}")
        tokens_Bl, keep_Bl = tokens.reshape(-1, l), keep.reshape(-1, l).bool()
        V = self.config.vocab_size
        if ((tokens_Bl < 0) | (tokens_Bl >= V)).any():
            raise ValueError(f"override at scale {si}: token indices must be in [0, {V - 1}]")
        tokens_Bl, keep_Bl = tokens_Bl.long().expand(B, l), keep_Bl.expand(B, l)
        idx_Bl = torch.where(keep_Bl, tokens_Bl, idx_Bl)
        emb_BlCv = torch.where(keep_Bl.unsqueeze(-1), self.vqvae.quantize.embedding(tokens_Bl), emb_BlCv)
        return idx_Bl, emb_BlCv

    def generate(self, labels, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0, more_smooth: bool = False,
                 seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, 3, Hi, Wi) in [0, 1] for ``labels``: runs ``generate_steps`` to the end and decodes."""
        for step in self.generate_steps(labels, cfg=cfg, top_k=top_k, top_p=top_p, more_smooth=more_smooth,
                                        seed=seed, generator=generator):
            pass
        return step.image()

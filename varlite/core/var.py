"""VAR: a class-conditional transformer that predicts an image's token maps coarse to fine, one scale per step.

Dimension key: B batch (2B: doubled for classifier-free guidance, rows B.. unconditional), L all tokens
(sum of pn_k^2), l tokens of one scale, C width, D condition width (= C), Cv latent channels, V vocabulary,
K scales, H,W final latent side, h,w one scale's side. Scale indices: ``si`` is 0-based in the code; the paper and
this prose say scale k = si + 1.

Input sequence (teacher forcing, VAR paper Sec. 3):
- scale 1 (pn_1^2 = 1 token): the start token  s = class_emb[label] + pos_start;
- scale k+1: the f_hat built from scales 1..k, area-downsampled to pn_{k+1}, through ``word_embed`` (Cv -> C);
- every token adds its absolute position embedding ``pos_1LC`` and the embedding of its scale ``lvl_embed``.
Block-causal mask: token i may attend to token j iff scale(j) <= scale(i), so all tokens of one scale are
predicted together from the coarser scales (and from each other's inputs, which are already known).
Output: logits over the V codebook entries for every position; training is cross-entropy against r_1..r_K.

Generation (``generate_steps``: the next-scale factorisation p(r_1..r_K) = prod_k p(r_k | r_<k)) runs the same
network one scale at a time with a KV cache: sample r_k, add its contribution phi_k(upsample(e[r_k])) to f_hat,
downsample f_hat to the next side, embed it as the next scale's input. Classifier-free guidance doubles the
batch: rows B.. carry the "unconditional" class ``num_classes``.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from . import sampling
from .configs import VARConfig
from .overrides import Overrides, apply_overrides, check_overrides
from .trace import Laps, ScaleStep
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

    def __init__(self, config: VARConfig, vqvae: VQVAE):
        super().__init__()
        vq_config = vqvae.config
        ours = (config.vocab_size, config.z_channels, tuple(config.patch_nums))
        theirs = (vq_config.vocab_size, vq_config.z_channels, tuple(vq_config.patch_nums))
        if ours != theirs:
            raise ValueError(f"VAR config (V={ours[0]}, Cv={ours[1]}, patch_nums={ours[2]}) does not match the VQVAE "
                             f"(V={theirs[0]}, Cv={theirs[1]}, patch_nums={theirs[2]}): build both from one preset")
        self.config = config
        object.__setattr__(self, "vqvae", vqvae)   # a plain reference: not registered as a submodule
        C, patch_nums = config.embed_dim, tuple(config.patch_nums)
        self.patch_nums, self.num_classes = patch_nums, config.num_classes
        self.L, self.first_l = config.L, patch_nums[0] ** 2
        self.begin_ends = config.begin_ends

        # parameters, in the official order and with the official names
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, C))      # position of the start token(s)
        self.pos_1LC = nn.Parameter(torch.zeros(1, self.L, C))              # absolute position of every token
        self.register_buffer("lvl_1L", scale_index_of_tokens(patch_nums))
        self.register_buffer("attn_bias_for_masking", block_causal_bias(patch_nums))
        self.word_embed = nn.Linear(config.z_channels, C)                    # f_hat features -> width C
        self.class_emb = nn.Embedding(config.num_classes + 1, C)             # + the "unconditional" class
        self.lvl_embed = nn.Embedding(len(patch_nums), C)                   # which scale a token belongs to
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), SharedAdaLin(C, 6 * C)) if config.shared_aln else nn.Identity()
        drop_path = torch.linspace(0, config.drop_path_rate, config.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(i, C, config.num_heads, config.mlp_ratio, config.norm_eps, config.shared_aln, drop_path[i])
            for i in range(config.depth)])
        self.head_nm = AdaLNBeforeHead(C, config.norm_eps)
        self.head = nn.Linear(C, config.vocab_size)

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
        cond_BD = self.class_emb(labels_B)
        x_BLC = torch.cat((self.start_tokens(cond_BD), self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
        x_BLC = x_BLC + (self.lvl_embed(self.lvl_1L.expand(B, -1)) + self.pos_1LC)
        cond_BD_or_gss = self.shared_ada_lin(cond_BD)
        for block in self.blocks:
            x_BLC = block(x_BLC, cond_BD_or_gss, attn_bias=self.attn_bias_for_masking)
        return self.logits(x_BLC, cond_BD)

    @torch.no_grad()
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02,
                     init_std: float = -1.0) -> None:
        """Upstream's initialisation for training from scratch: truncated normal (std sqrt(1/3C) when init_std < 0),
        small head, the output projections of the attention and FFN branches scaled by 1/sqrt(2 depth), AdaLN gates
        near zero."""
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
    def check_sampling_args(self, cfg, top_k, top_p, batch: int = 1) -> None:
        """Raise a ValueError saying what is allowed unless cfg is finite and >= 0, top_k an int in [0, V] and top_p
        in [0, 1]. Each is one value for every row or a list / tuple of ``batch`` values, one per label (a message
        about such a value names its row)."""
        V = self.config.vocab_size
        rules = {"cfg": (lambda v: isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0,
                         "must be a finite number >= 0 (0 = no guidance; 1.5-4 are typical)"),
                 "top_k": (lambda v: isinstance(v, int) and 0 <= v <= V,
                           f"must be an int in [0, {V}] (0 = off, V = vocabulary size)"),
                 "top_p": (lambda v: isinstance(v, numbers.Real) and 0 <= v <= 1, "must be in [0, 1] (0 = off)")}
        for name, value in (("cfg", cfg), ("top_k", top_k), ("top_p", top_p)):
            per_row = sampling.is_per_row(value)
            if per_row and len(value) != batch:
                raise ValueError(f"{name} has {len(value)} values but the generation has {batch} labels: give one "
                                 f"value for all, or one per label")
            allowed, rule = rules[name]
            for b, row_value in enumerate(value if per_row else [value]):
                if not allowed(row_value):
                    raise ValueError(f"{name}{f' (row {b})' if per_row else ''} {rule}; got {row_value!r}")

    def start_tokens(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """The first scale's input (B, pn_1^2, C): the class embedding plus the start position ``pos_start``."""
        B = cond_BD.shape[0]
        return cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)

    def _checked_request(self, labels, cfg, top_k, top_p, seed, generator, overrides: Overrides | None,
                         capture_attention):
        """(labels_B, cfg, top_k, top_p, generator, checked overrides, capture plan) for ``generate_steps``, or a
        ValueError saying what is wrong. A per-row setting whose rows all agree becomes that one value
        (``sampling.one_or_per_row``); the capture plan is ``_capture_plan``'s."""
        labels_B = self.check_labels(labels)
        B = labels_B.shape[0]
        self.check_sampling_args(cfg, top_k, top_p, batch=B)
        cfg, top_k, top_p = (sampling.one_or_per_row(value) for value in (cfg, top_k, top_p))
        overrides = check_overrides(self.patch_nums, self.config.vocab_size, overrides or {}, B)
        return (labels_B, cfg, top_k, top_p, self._generators(seed, generator, B), overrides,
                self._capture_plan(capture_attention))

    def _generators(self, seed, generator, batch: int) -> torch.Generator | tuple[torch.Generator, ...]:
        """The generation's randomness: ``generator`` if given, else a generator seeded with ``seed``. A list / tuple
        of ``batch`` generators or seeds gives every row its own, so that each row draws what a solo run would."""
        per_row = generator if generator is not None else seed
        if sampling.is_per_row(per_row) and len(per_row) != batch:
            name = "generator" if generator is not None else "seed"
            raise ValueError(f"{name} has {len(per_row)} values but the generation has {batch} labels: give one "
                             f"for all, or one per label")
        if generator is not None:
            return tuple(generator) if sampling.is_per_row(generator) else generator
        device = self.lvl_1L.device
        if sampling.is_per_row(seed):
            return tuple(sampling.seeded_generator(row_seed, device) for row_seed in seed)
        return sampling.seeded_generator(seed, device)

    def _capture_plan(self, capture_attention: bool | Mapping[int, Sequence[int]]) -> dict[int, slice | list[int]]:
        """{scale si: the query rows whose attention to capture there} for ``generate_steps``: every row
        (``slice(None)``) of every scale for True, nothing for False, and for a mapping {si: [i, ...]} its rows as a
        list; a ValueError says what is wrong with a mapping."""
        if isinstance(capture_attention, bool):
            return {si: slice(None) for si in range(len(self.patch_nums))} if capture_attention else {}
        if not isinstance(capture_attention, Mapping):
            raise ValueError(f"capture_attention must be True, False or a mapping {{scale si: [query i, ...]}}; got "
                             f"{capture_attention!r}")
        plan = {}
        for si, queries in capture_attention.items():
            if not isinstance(si, numbers.Integral) or not 0 <= si < len(self.patch_nums):
                raise ValueError(f"capture_attention: scale {si!r} does not exist: this model has scales 0.."
                                 f"{len(self.patch_nums) - 1} (0-based si)")
            pn = self.patch_nums[si]
            if (not isinstance(queries, Sequence) or len(queries) == 0
                    or any(not isinstance(i, numbers.Integral) or not 0 <= i < pn * pn for i in queries)):
                raise ValueError(f"capture_attention: scale {si} needs a non-empty list of query indices i = row * "
                                 f"{pn} + col in 0..{pn * pn - 1}; got {queries!r}")
            plan[int(si)] = [int(i) for i in queries]
        return plan

    @torch.inference_mode()
    def generate_steps(self, labels, cfg: float | Sequence[float] = 1.5, top_k: int | Sequence[int] = 0,
                       top_p: float | Sequence[float] = 0.0, more_smooth: bool = False,
                       seed: int | None | Sequence[int | None] = None,
                       generator: torch.Generator | Sequence[torch.Generator] | None = None,
                       capture_attention: bool | Mapping[int, Sequence[int]] = False,
                       overrides: Overrides | None = None) -> Iterator[ScaleStep]:
        """Generate images for ``labels`` one scale at a time, yielding a ``ScaleStep`` after each scale.

        This is the next-scale factorisation p(r_1, ..., r_K | c) = prod_k p(r_k | r_<k, c) with a KV cache. At
        scale k: the transformer reads this scale's input (the class token for k = 1, else f_hat so far downsampled
        to pn_k) and attends to it and to every coarser scale through the cache; the logits are guided, filtered and
        sampled into r_k; f_hat += phi_k(up(e[r_k])); f_hat at the next side becomes the next input. (The paper's
        Algorithm 1 is the VQVAE's multi-scale encoding and Algorithm 2 its reconstruction; generation has no box.)

        cfg: guidance strength (ramped linearly over the scales); top_k / top_p: filters (0 = off); more_smooth:
        Gumbel smoothing; seed (or a ready ``generator``): the only source of randomness, so equal seeds give
        equal images. Per row: cfg, top_k, top_p, seed and generator may each be a list of B values, one per label;
        row b then gets exactly the tokens of ``generate_steps([labels[b]], cfg=cfg[b], top_k=top_k[b],
        top_p=top_p[b], seed=seed[b])`` (several people's requests run as one batch; ``more_smooth`` is one value for
        the batch). A step's ``cfg`` is then the list of the rows' strengths t_k (a float when all rows agree).
        capture_attention: True: every step's ``attention`` is a list, one per layer, of (B, H, l, Lk) attention
        weights (H heads, l the scale's queries, Lk = ``step.end`` keys: this scale and all coarser ones), conditional
        rows only. A mapping {si: [i, ...]} captures only the queries i = row * pn + col listed for each scale si:
        that step's ``attention`` is per layer (B, H, q, Lk) for its q listed queries, in that order -- the same
        numbers as those rows of the full capture (a row of softmax(q k^T) depends on its own query alone), held in
        q / l of the memory (``complexity.attention_capture_bytes``); the other steps have None. The capture is
        computed beside the output and never changes the tokens or images.
        overrides: {scale si: (tokens, keep)}: at scale si, positions where ``keep`` is True take the given tokens
        instead of sampled ones (``varlite.core.overrides``: token surgery and zero-shot editing). The step's
        probabilities, entropy and candidates are computed from its logits when read; its ``timings`` are the lap
        times of the loop's three parts (transformer, sampling, quantizer).
        """
        labels_B, cfg, top_k, top_p, generator, overrides, capture_plan = self._checked_request(
            labels, cfg, top_k, top_p, seed, generator, overrides, capture_attention)  # capture_plan: {si: query rows}
        B, K, quantizer, H = labels_B.shape[0], len(self.patch_nums), self.vqvae.quantize, self.patch_nums[-1]
        # classifier-free guidance runs 2B rows: the labels, then B rows of the unconditional class
        cond_2BD = self.class_emb(torch.cat((labels_B, torch.full_like(labels_B, self.num_classes))))
        modulation_per_block = [block.modulation(self.shared_ada_lin(cond_2BD)) for block in self.blocks]
        lvl_pos_1LC = self.lvl_embed(self.lvl_1L) + self.pos_1LC
        x_2BlC = self.start_tokens(cond_2BD) + lvl_pos_1LC[:, :self.first_l]
        kv_cache = KVCache(len(self.blocks))                      # this call's own: the model stays shared
        f_hat_BCvHW = cond_2BD.new_zeros(B, quantizer.Cv, H, H)
        for si, (pn, (begin, end)) in enumerate(zip(self.patch_nums, self.begin_ends)):  # [begin, end): its tokens
            laps = Laps()                                                        # this scale's time per part
            kv_cache.capture_scale(capture_plan.get(si))                        # which attention rows to keep
            for block, modulation in zip(self.blocks, modulation_per_block):   # sees this scale and all coarser ones
                x_2BlC = block.modulated(x_2BlC, modulation, kv_cache=kv_cache)
            raw_logits_2BlV = self.logits(x_2BlC, cond_2BD)
            t = sampling.cfg_strength(cfg, si, K)                               # a float, or B floats
            logits_BlV = sampling.guide(raw_logits_2BlV, t)                     # (1 + t) cond - t uncond
            laps.lap("transformer")
            filtered_BlV = sampling.filter_top_k_top_p(logits_BlV, top_k, top_p)
            idx_Bl = sampling.sample_tokens(filtered_BlV, generator, sampling.is_greedy(top_k, more_smooth))  # r_k
            emb_BlCv = (sampling.smoothed_embedding(filtered_BlV, si, K, quantizer.embedding.weight, generator)
                        if more_smooth else quantizer.embedding(idx_Bl))        # e[r_k] (or a smoothed mix)
            idx_Bl, emb_BlCv = apply_overrides(overrides, si, idx_Bl, emb_BlCv, quantizer.embedding)
            laps.lap("sampling")
            emb_BCvhw = emb_BlCv.transpose(1, 2).reshape(B, quantizer.Cv, pn, pn)
            contribution_BCvHW = quantizer.upsample_and_phi(emb_BCvhw, si)      # phi_k(up(e[r_k]))
            f_hat_BCvHW = f_hat_BCvHW + contribution_BCvHW
            if si != K - 1:                                                      # f_hat at the next side, embedded
                next_BlC = self.word_embed(quantizer.input_for_scale(f_hat_BCvHW, si + 1))
                x_2BlC = (next_BlC + lvl_pos_1LC[:, slice(*self.begin_ends[si + 1])]).repeat(2, 1, 1)
            laps.lap("quantizer")
            yield ScaleStep(scale=si, pn=pn, num_scales=K, cfg=t, tokens=idx_Bl.view(B, pn, pn), embedding=emb_BCvhw,
                            contribution=contribution_BCvHW, f_hat=f_hat_BCvHW, logits=logits_BlV, begin=begin, end=end,
                            raw_logits=raw_logits_2BlV, total_tokens=self.L, timings=laps.seconds,
                            attention=kv_cache.captured_attention(rows=B), decoder=self.vqvae.decode_f_hat)

    def generate(self, labels, cfg: float | Sequence[float] = 1.5, top_k: int | Sequence[int] = 0,
                 top_p: float | Sequence[float] = 0.0, more_smooth: bool = False,
                 seed: int | None | Sequence[int | None] = None,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Images (B, 3, Hi, Wi) in [0, 1] for ``labels``: runs ``generate_steps`` to the end and decodes (settings
        per row as there)."""
        for step in self.generate_steps(labels, cfg=cfg, top_k=top_k, top_p=top_p, more_smooth=more_smooth,
                                        seed=seed, generator=generator):
            pass
        return step.image()

"""The transformer blocks of VAR: AdaLN-conditioned self-attention with L2-normalised q/k, and an explicit KV cache.

Dimension key: B batch, L tokens in the sequence (or of the current scale when generating), C width,
D condition width (= C), H heads, c = C/H head dim, Lk keys seen so far, l queries of a scale, q of them whose
attention is captured.

One block (``AdaLNSelfAttn``), with (gamma1, gamma2, scale1, scale2, shift1, shift2) = Linear(SiLU(cond)):

    x = x + gamma1 * Attn( LN(x) * (1 + scale1) + shift1 )
    x = x + gamma2 * FFN ( LN(x) * (1 + scale2) + shift2 )          LN without learned affine, eps 1e-6

Attention uses L2-normalised queries and keys with a learned per-head temperature s_h (clamped at log 100):

    A = softmax( exp(s_h) * q_hat k_hat^T + mask ),    q_hat = q / ||q||,  k_hat = k / ||k||

Generation does not need the L x L mask: a scale's queries may see every key cached so far (all coarser scales)
plus the keys of their own scale, which is exactly the block-causal rule. The cache is a ``KVCache`` object owned
by one generation call, so one model can serve many threads at once; asked to, the same object keeps the latest
scale's attention probabilities A of every block (attention capture), computed beside the output, never changing it:
all of A, or only the rows of chosen queries (a row of A depends on its own query alone, so the rows are the same
numbers, for a fraction of the memory).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def attention_weights(q_BHLc: torch.Tensor, k_BHLkc: torch.Tensor,
                      attn_bias: torch.Tensor | None = None) -> torch.Tensor:
    """A = softmax(q k^T + bias), (B, H, L, Lk): the weights attention applies to the values (q from ``qkv``
    already carries exp(s_h), so no other scale)."""
    scores_BHLLk = q_BHLc @ k_BHLkc.transpose(-2, -1)
    if attn_bias is not None:
        scores_BHLLk = scores_BHLLk + attn_bias
    return scores_BHLLk.softmax(dim=-1)


class KVCache:
    """Keys and values of every block for the tokens generated so far: ``keys[i]`` is (B, H, Lk, c) or None.

    Attention capture: ``capture_scale(query_rows)`` before a scale says which of its queries' attention weights to
    keep; each block then stores its weights in ``attention[i]``, (B, H, q, Lk): the rows ``query_rows`` of the
    scale's (B, H, l, Lk) weights A -- ``slice(None)`` keeps all l rows, a list of query indices (i = row * pn + col)
    keeps just those rows in that order, None keeps nothing.
    """

    def __init__(self, depth: int):
        self.keys: list[torch.Tensor | None] = [None] * depth
        self.values: list[torch.Tensor | None] = [None] * depth
        self.query_rows: slice | list[int] | None = None
        self.attention: list[torch.Tensor | None] = [None] * depth

    def extend(self, block_idx: int, k_BHlc: torch.Tensor, v_BHlc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this scale's keys/values for one block; return all keys/values seen so far."""
        if self.keys[block_idx] is not None:
            k_BHlc = torch.cat((self.keys[block_idx], k_BHlc), dim=2)
            v_BHlc = torch.cat((self.values[block_idx], v_BHlc), dim=2)
        self.keys[block_idx], self.values[block_idx] = k_BHlc, v_BHlc
        return k_BHlc, v_BHlc

    def capture_scale(self, query_rows: slice | list[int] | None) -> None:
        """Before a scale: capture the attention of these of its queries (see the class docstring); the previous
        scale's weights are let go."""
        self.query_rows = query_rows
        self.attention = [None] * len(self.attention)

    def capture(self, block_idx: int, q_BHlc: torch.Tensor, k_BHLkc: torch.Tensor) -> None:
        """Keep this block's attention weights for the chosen queries of this scale, if any: softmax(q k^T) of
        those queries alone, (B, H, q, Lk)."""
        if self.query_rows is not None:
            self.attention[block_idx] = attention_weights(q_BHlc[:, :, self.query_rows], k_BHLkc)

    def captured_attention(self, rows: int) -> list[torch.Tensor] | None:
        """Every block's attention weights of this scale, batch rows [:rows] only (copied, so the rest can be freed):
        a list of (rows, H, q, Lk), or None when this scale is not captured."""
        if self.query_rows is None:
            return None
        return [weights_BHqLk[:rows].clone() for weights_BHqLk in self.attention]


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a sample's branch output (attention or FFN, before it is added to x) with
    probability p, rescaling the kept ones by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep_B = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep_B.div_(1 - p)


class SelfAttention(nn.Module):
    """Multi-head self-attention with L2-normalised q, k and a learned per-head scale (official ``attn``)."""

    MAX_SCALE_MUL = math.log(100)

    def __init__(self, block_idx: int, embed_dim: int, num_heads: int):
        super().__init__()
        self.block_idx, self.num_heads, self.head_dim = block_idx, num_heads, embed_dim // num_heads
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        self.mat_qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))   # keys have no bias (kept for the checkpoint)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def qkv(self, x_BLC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project to per-head q_hat * exp(s_h), k_hat, v, each (B, H, L, c)."""
        B, L, C = x_BLC.shape
        bias_3C = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv_BL3Hc = F.linear(x_BLC, self.mat_qkv.weight, bias_3C).view(B, L, 3, self.num_heads, self.head_dim)
        q_BHLc, k_BHLc, v_BHLc = qkv_BL3Hc.permute(2, 0, 3, 1, 4).unbind(dim=0)
        scale_mul_1H11 = self.scale_mul_1H11.clamp_max(self.MAX_SCALE_MUL).exp()
        return F.normalize(q_BHLc, dim=-1).mul(scale_mul_1H11), F.normalize(k_BHLc, dim=-1), v_BHLc

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        """proj(A v). ``attn_bias`` (additive, 0/-inf) masks the teacher-forced pass; ``kv_cache`` serves generation:
        this scale's keys and values join the cached ones (and the cache captures A if asked to)."""
        B, L, C = x_BLC.shape
        q_BHLc, k_BHLkc, v_BHLkc = self.qkv(x_BLC)
        if kv_cache is not None:
            k_BHLkc, v_BHLkc = kv_cache.extend(self.block_idx, k_BHLkc, v_BHLkc)
            kv_cache.capture(self.block_idx, q_BHLc, k_BHLkc)
        out_BHLc = F.scaled_dot_product_attention(q_BHLc, k_BHLkc, v_BHLkc, attn_mask=attn_bias, scale=1.0)
        return self.proj(out_BHLc.transpose(1, 2).reshape(B, L, C))

    def attention_probabilities(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """A = softmax(exp(s_h) q_hat k_hat^T + bias), (B, H, L, L): the weights ``forward`` applies to x's values."""
        q_BHLc, k_BHLc, _ = self.qkv(x_BLC)
        return attention_weights(q_BHLc, k_BHLc, attn_bias)


class FFN(nn.Module):
    """fc2(GELU_tanh(fc1(x))), hidden width mlp_ratio * C."""

    def __init__(self, embed_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, embed_dim)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        hidden_BLh = self.fc1(x_BLC)
        if torch.is_grad_enabled():     # training: autograd keeps fc1's output for GELU's backward
            return self.fc2(F.gelu(hidden_BLh, approximate="tanh"))
        # inference: GELU in place (aten's gelu_; F.gelu has no inplace flag), the same values without allocating
        # and first-touching a second (B, L, 4C) tensor, the largest of a block
        return self.fc2(torch.ops.aten.gelu_(hidden_BLh, approximate="tanh"))


class AdaLNSelfAttn(nn.Module):
    """One transformer block whose LayerNorm scale/shift and branch gates (gamma) come from the class condition.

    Per-block AdaLN: Linear(SiLU(cond_BD)) -> 6C (official ``ada_lin``). Shared AdaLN (d36): the model computes
    one (B,1,6,C) tensor for all blocks and each block adds its own learned offset ``ada_gss`` (1,1,6,C).
    """

    def __init__(self, block_idx: int, embed_dim: int, num_heads: int, mlp_ratio: float, norm_eps: float,
                 shared_aln: bool, drop_path: float = 0.0):
        super().__init__()
        self.C, self.shared_aln, self.drop_path_p = embed_dim, shared_aln, drop_path
        self.attn = SelfAttention(block_idx, embed_dim, num_heads)
        self.ffn = FFN(embed_dim, round(embed_dim * mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        if shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, embed_dim) / embed_dim ** 0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, 6 * embed_dim))

    def modulation(self, cond_BD_or_gss: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(gamma1, gamma2, scale1, scale2, shift1, shift2), each (B, 1, C). They depend on the class condition
        only, so generation computes them once per call and reuses them at every scale (``modulated``): at d16 the
        16 ``ada_lin`` layers are a third of the weights, which each scale would otherwise read again."""
        if self.shared_aln:
            return (self.ada_gss + cond_BD_or_gss).unbind(2)
        return self.ada_lin(cond_BD_or_gss).view(-1, 1, 6, self.C).unbind(2)

    def forward(self, x_BLC: torch.Tensor, cond_BD_or_gss: torch.Tensor, attn_bias: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        """The two AdaLN-modulated, gated branches of the module docstring (``kv_cache``: see SelfAttention)."""
        return self.modulated(x_BLC, self.modulation(cond_BD_or_gss), attn_bias, kv_cache)

    def modulated(self, x_BLC: torch.Tensor, modulation: tuple[torch.Tensor, ...],
                  attn_bias: torch.Tensor | None = None, kv_cache: KVCache | None = None) -> torch.Tensor:
        """``forward`` with the six modulation tensors already computed (``self.modulation(cond)``)."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = modulation
        attn_BLC = self.attn(self.ln_wo_grad(x_BLC).mul(scale1.add(1)).add_(shift1), attn_bias, kv_cache)
        x_BLC = x_BLC + drop_path(attn_BLC.mul_(gamma1), self.drop_path_p, self.training)
        ffn_BLC = self.ffn(self.ln_wo_grad(x_BLC).mul(scale2.add(1)).add_(shift2))
        return x_BLC + drop_path(ffn_BLC.mul(gamma2), self.drop_path_p, self.training)


class AdaLNBeforeHead(nn.Module):
    """The final AdaLN before the classifier head: LN(x) * (1 + scale) + shift, (scale, shift) = Linear(SiLU(cond))."""

    def __init__(self, embed_dim: int, norm_eps: float):
        super().__init__()
        self.C = embed_dim
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, 2 * embed_dim))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale_B1C, shift_B1C = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x_BLC).mul(scale_B1C.add(1)).add_(shift_B1C)


class SharedAdaLin(nn.Linear):
    """d36's shared AdaLN projection: cond (B, D) -> (B, 1, 6, C), used by every block."""

    def forward(self, cond_BD):
        return super().forward(cond_BD).view(-1, 1, 6, self.weight.shape[0] // 6)

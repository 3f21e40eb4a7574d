"""Lesson 4 -- inside the transformer: AdaLN and L2-normalised attention."""
import math

import torch.nn.functional as F


def adaln(x_BLC, cond_BD, ada_lin):
    """LN(x) * (1 + scale) + shift, (scale, shift) = ada_lin(cond); LN without learned weights, eps 1e-6."""
    B, L, C = x_BLC.shape
    scale, shift = ada_lin(cond_BD).view(B, 1, 2, C).unbind(2)
    return F.layer_norm(x_BLC, (C,), eps=1e-6) * (1 + scale) + shift


def l2_attention_weights(q_BHLc, k_BHLc, scale_mul_1H11, attn_bias):
    """softmax(exp(min(s_h, log 100)) q_hat k_hat^T + bias) over the keys."""
    q_hat, k_hat = F.normalize(q_BHLc, dim=-1), F.normalize(k_BHLc, dim=-1)
    logit_scale = scale_mul_1H11.clamp_max(math.log(100)).exp()       # an inverse temperature, at most 100
    scores = logit_scale * (q_hat @ k_hat.transpose(-2, -1))
    if attn_bias is not None:
        scores = scores + attn_bias
    return scores.softmax(dim=-1)

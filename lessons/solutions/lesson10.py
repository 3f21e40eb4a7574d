"""Lesson 10 -- the capstone: VAR assembled from its pieces, on the official weights ``W`` (official parameter names).

The pieces call each other by name, as they do in the notebook. Shapes: B batch, L all tokens, l one scale's tokens,
C width, Cv latent channels, V vocabulary, H heads, c head dim, K scales.
"""
import numpy as np
import torch
import torch.nn.functional as F


def nearest_code(z_NCv, codebook_VCv):
    """Index of the nearest codebook vector of every row (squared Euclidean distance)."""
    d_NV = z_NCv.square().sum(1, keepdim=True) + codebook_VCv.square().sum(1) - 2 * z_NCv @ codebook_VCv.T
    return d_NV.argmin(dim=1)


def phi_of_scale(h_BCvHW, si, num_scales, W):
    """phi_k: the shared 3x3 conv whose tick is nearest to si / (K - 1), blended half and half with the identity."""
    ticks = np.linspace(1 / 12, 11 / 12, 4)
    i = int(np.argmin(np.abs(ticks - (si / (num_scales - 1) if num_scales > 1 else 0.0))))
    prefix = f"quantize.quant_resi.qresi_ls.{i}."
    conv = F.conv2d(h_BCvHW, W[prefix + "weight"], W[prefix + "bias"], padding=1)
    return 0.5 * h_BCvHW + 0.5 * conv


def _contribution(idx_Bl, si, W, patch_nums):
    """phi_k(bicubic upsample(e[r_k])) of scale si, (B, Cv, H, H)."""
    codebook_VCv, pn, H = W["quantize.embedding.weight"], patch_nums[si], patch_nums[-1]
    h_BCvhw = codebook_VCv[idx_Bl].transpose(1, 2).reshape(idx_Bl.shape[0], -1, pn, pn)
    up_BCvHW = h_BCvhw if pn == H else F.interpolate(h_BCvhw, size=(H, H), mode="bicubic")
    return phi_of_scale(up_BCvHW, si, len(patch_nums), W)


def encode_tokens(f_BCvHW, W, patch_nums):
    """Residual quantization: each scale quantizes the rest at its side, then removes its contribution."""
    B, Cv, H, _ = f_BCvHW.shape
    rest, token_maps = f_BCvHW.clone(), []
    for si, pn in enumerate(patch_nums):
        target_BCvhw = rest if pn == H else F.interpolate(rest, size=(pn, pn), mode="area")
        idx_Bl = nearest_code(target_BCvhw.permute(0, 2, 3, 1).reshape(-1, Cv),
                              W["quantize.embedding.weight"]).view(B, -1)
        rest = rest - _contribution(idx_Bl, si, W, patch_nums)
        token_maps.append(idx_Bl)
    return token_maps


def var_input(token_maps, W, patch_nums):
    """(B, L - pn_1^2, Cv): f_hat after scales 1..k, area-downsampled to pn_{k+1}, for k = 1..K-1."""
    f_hat, inputs = 0, []
    for si in range(len(patch_nums) - 1):
        f_hat = f_hat + _contribution(token_maps[si], si, W, patch_nums)
        x_BCvhw = F.interpolate(f_hat, size=(patch_nums[si + 1],) * 2, mode="area")
        inputs.append(x_BCvhw.flatten(2).transpose(1, 2))
    return torch.cat(inputs, dim=1)


def block_causal_mask(patch_nums):
    """(L, L) bool: query i may attend to key j iff scale(j) <= scale(i)."""
    lvl_L = torch.cat([torch.full((pn * pn,), k) for k, pn in enumerate(patch_nums)])
    return lvl_L.view(-1, 1) >= lvl_L.view(1, -1)


def attention(x_BLC, W, i, attn_bias, cache):
    """Block i's attention: L2-normalised q, k, logit scale exp(min(s_h, log 100)), mask or KV cache, projection."""
    p = f"blocks.{i}.attn."
    B, L, C = x_BLC.shape
    H = W[p + "scale_mul_1H11"].shape[1]
    bias = torch.cat((W[p + "q_bias"], torch.zeros_like(W[p + "q_bias"]), W[p + "v_bias"]))
    q, k, v = F.linear(x_BLC, W[p + "mat_qkv.weight"], bias).view(B, L, 3, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)
    q = F.normalize(q, dim=-1) * W[p + "scale_mul_1H11"].clamp_max(np.log(100)).exp()
    k = F.normalize(k, dim=-1)
    if cache is not None:
        if i in cache:
            k, v = torch.cat((cache[i][0], k), dim=2), torch.cat((cache[i][1], v), dim=2)
        cache[i] = (k, v)
    scores = q @ k.transpose(-2, -1)
    if attn_bias is not None:
        scores = scores + attn_bias
    out_BLC = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, L, C)
    return F.linear(out_BLC, W[p + "proj.weight"], W[p + "proj.bias"])


def adaln_block(x_BLC, cond_BD, W, i, attn_bias, cache):
    """x + gamma1 attention(LN(x)(1 + scale1) + shift1) ; then + gamma2 FFN(LN(x)(1 + scale2) + shift2)."""
    p = f"blocks.{i}."
    B, L, C = x_BLC.shape
    mod = F.linear(F.silu(cond_BD), W[p + "ada_lin.1.weight"], W[p + "ada_lin.1.bias"]).view(B, 1, 6, C)
    gamma1, gamma2, scale1, scale2, shift1, shift2 = mod.unbind(2)
    h = F.layer_norm(x_BLC, (C,), eps=1e-6) * (1 + scale1) + shift1
    x_BLC = x_BLC + attention(h, W, i, attn_bias, cache) * gamma1
    h = F.layer_norm(x_BLC, (C,), eps=1e-6) * (1 + scale2) + shift2
    h = F.gelu(F.linear(h, W[p + "ffn.fc1.weight"], W[p + "ffn.fc1.bias"]), approximate="tanh")
    return x_BLC + F.linear(h, W[p + "ffn.fc2.weight"], W[p + "ffn.fc2.bias"]) * gamma2


def logits_head(x_BLC, cond_BD, W):
    """head(LN(x)(1 + scale) + shift), (scale, shift) from the class."""
    B, L, C = x_BLC.shape
    scale, shift = F.linear(F.silu(cond_BD), W["head_nm.ada_lin.1.weight"], W["head_nm.ada_lin.1.bias"]).view(
        B, 1, 2, C).unbind(2)
    return F.linear(F.layer_norm(x_BLC, (C,), eps=1e-6) * (1 + scale) + shift, W["head.weight"], W["head.bias"])


def _level_position(W, patch_nums):
    """(1, L, C): every token's level embedding plus its position embedding."""
    lvl_L = torch.cat([torch.full((pn * pn,), k) for k, pn in enumerate(patch_nums)])
    return (W["lvl_embed.weight"][lvl_L] + W["pos_1LC"][0]).unsqueeze(0)


def var_forward(labels_B, x_BLCv, W, config):
    """Teacher-forced logits (B, L, V): class token + embedded inputs, masked blocks, head."""
    cond_BD = W["class_emb.weight"][labels_B]
    first_BlC = cond_BD.unsqueeze(1) + W["pos_start"]
    x_BLC = torch.cat((first_BlC, F.linear(x_BLCv, W["word_embed.weight"], W["word_embed.bias"])), dim=1)
    x_BLC = x_BLC + _level_position(W, config["patch_nums"])
    attn_bias = torch.where(block_causal_mask(config["patch_nums"]), 0.0, -torch.inf)
    for i in range(config["depth"]):
        x_BLC = adaln_block(x_BLC, cond_BD, W, i, attn_bias, None)
    return logits_head(x_BLC, cond_BD, W)


def guided_logits(logits_2BlV, cfg, si, num_scales):
    """(1 + t) cond - t uncond with t = cfg * si / (K - 1)."""
    B = logits_2BlV.shape[0] // 2
    t = cfg * si / (num_scales - 1) if num_scales > 1 else 0.0
    return (1 + t) * logits_2BlV[:B] - t * logits_2BlV[B:]


def top_k_top_p(logits_BlV, top_k, top_p):
    """-inf outside the top_k largest logits, then outside the top_p nucleus of what is left."""
    if top_k > 0:
        kth_largest = logits_BlV.topk(min(top_k, logits_BlV.shape[-1]), dim=-1).values[..., -1:]
        logits_BlV = logits_BlV.masked_fill(logits_BlV < kth_largest, -torch.inf)
    if top_p > 0:
        probs, order = logits_BlV.softmax(dim=-1).sort(dim=-1, descending=True)
        remove_sorted = probs.cumsum(dim=-1) - probs >= top_p
        logits_BlV = logits_BlV.masked_fill(torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted),
                                            -torch.inf)
    return logits_BlV


def generate(labels_B, W, config, cfg, top_k, top_p, seed):
    """Next-scale sampling with a KV cache: (token maps (B, l) per scale, raw logits (2B, l, V) per scale, final
    f_hat)."""
    patch_nums, K, V = config["patch_nums"], len(config["patch_nums"]), config["vocab_size"]
    B, H = labels_B.shape[0], patch_nums[-1]
    generator = torch.Generator().manual_seed(seed)
    labels_2B = torch.cat((labels_B, torch.full_like(labels_B, config["num_classes"])))   # conditional, unconditional
    cond_2BD = W["class_emb.weight"][labels_2B]
    lvl_pos_1LC = _level_position(W, patch_nums)
    x_2BlC = cond_2BD.unsqueeze(1) + W["pos_start"] + lvl_pos_1LC[:, :1]
    cache, f_hat, token_maps, raw_logits, begin = {}, torch.zeros(B, config["Cv"], H, H), [], [], 0
    for si, pn in enumerate(patch_nums):
        for i in range(config["depth"]):
            x_2BlC = adaln_block(x_2BlC, cond_2BD, W, i, None, cache)
        raw_2BlV = logits_head(x_2BlC, cond_2BD, W)
        logits_BlV = top_k_top_p(guided_logits(raw_2BlV, cfg, si, K), top_k, top_p)
        idx_Bl = torch.multinomial(logits_BlV.softmax(dim=-1).view(-1, V), num_samples=1, replacement=True,
                                   generator=generator).view(B, pn * pn)
        f_hat = f_hat + _contribution(idx_Bl, si, W, patch_nums)
        token_maps.append(idx_Bl)
        raw_logits.append(raw_2BlV)
        begin += pn * pn
        if si < K - 1:
            nxt = patch_nums[si + 1]
            x_BlCv = F.interpolate(f_hat, size=(nxt, nxt), mode="area").flatten(2).transpose(1, 2)
            x_BlC = F.linear(x_BlCv, W["word_embed.weight"], W["word_embed.bias"]) + lvl_pos_1LC[:, begin:begin + nxt * nxt]
            x_2BlC = x_BlC.repeat(2, 1, 1)
    return token_maps, raw_logits, f_hat

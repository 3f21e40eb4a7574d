"""The three hints of each capstone piece written for the capstone (the idea, the approach, the code), shown by
the checks of lesson 10 and ``ex.hint``. The pieces that repeat an earlier exercise (nearest_code,
block_causal_mask, top_k_top_p) are checked, and hinted, by that exercise."""

HINTS = {
    "phi_of_scale": (
        "Scale k's contribution is corrected by one of the 4 shared 3x3 convolutions, the one whose tick is nearest "
        "to the scale's relative position; the correction is blended with the identity (quant_resi = 0.5).",
        "ticks = np.linspace(1/12, 11/12, 4); i = argmin |ticks - si / (K - 1)|; conv = F.conv2d(h, "
        "W[f'quantize.quant_resi.qresi_ls.{i}.weight'], W[...bias], padding=1); return (1 - 0.5) h + 0.5 conv.",
        "i = int(np.argmin(np.abs(np.linspace(1 / 12, 11 / 12, 4) - si / (K - 1)))); w = "
        "f'quantize.quant_resi.qresi_ls.{i}.'; return 0.5 * h + 0.5 * F.conv2d(h, W[w + 'weight'], W[w + 'bias'], "
        "padding=1)"),
    "encode_tokens": (
        "Exercise 2.1 on the official weights: each scale quantizes the rest at its own size, then removes its "
        "contribution from the rest.",
        "rest = f; per scale: area-down (not the last), your nearest_code against W['quantize.embedding.weight'], "
        "look the codes up, bicubic up (not the last), your phi_of_scale, subtract from rest.",
        "target = rest if si == K - 1 else F.interpolate(rest, size=(pn, pn), mode='area'); idx = "
        "nearest_code(target.permute(0, 2, 3, 1).reshape(-1, Cv), E).view(B, -1); z = E[idx].transpose(1, "
        "2).reshape(B, Cv, pn, pn); up = z if si == K - 1 else F.interpolate(z, size=(H, H), mode='bicubic'); "
        "rest = rest - phi_of_scale(up, si, K, W)"),
    "var_input": (
        "Exercise 3.1 on the official weights: the input of scale k+1 is f_hat after scales 1..k, seen at the next "
        "side.",
        "Running f_hat = sum of phi_of_scale(bicubic up(E[r_k])); after scale si < K - 1, area-downsample to "
        "patch_nums[si + 1], flatten to (B, l, Cv); concatenate.",
        "for si in range(K - 1): f_hat = f_hat + phi_of_scale(up(E[maps[si]]), si, K, W); out.append(F.interpolate("
        "f_hat, size=(pn[si + 1],) * 2, mode='area').flatten(2).transpose(1, 2)); return torch.cat(out, 1)"),
    "attention": (
        "One attention sublayer of block i: q, k, v from one linear map (q and v have biases, k none), q and k "
        "L2-normalised, the scores multiplied by the head's logit scale exp(min(s_h, log 100)), the mask added, "
        "softmax, the weighted values, the output projection. With a cache, this scale's k and v join the cached ones.",
        "qkv = F.linear(x, W[p + 'mat_qkv.weight'], cat(q_bias, zeros, v_bias)).view(B, l, 3, H, c).permute(2, 0, 3, "
        "1, 4); normalise q, k; q *= scale; if cache is not None: cat k, v after cache.get(i) and store them; "
        "F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0); proj.",
        "see lessons/solutions/lesson10.py: attention"),
    "adaln_block": (
        "A block: the class condition gives six vectors (two gates, two scales, two shifts); attention and the FFN "
        "each see LN(x) * (1 + scale) + shift, and their outputs, multiplied by a gate, are added to x.",
        "gamma1, gamma2, scale1, scale2, shift1, shift2 = F.linear(F.silu(cond), W[p + 'ada_lin.1.weight'], "
        "W[p + 'ada_lin.1.bias']).view(B, 1, 6, C).unbind(2); x = x + attention(ln(x) * (1 + scale1) + shift1, ...) "
        "* gamma1; x = x + ffn(ln(x) * (1 + scale2) + shift2) * gamma2; ffn = fc2(gelu_tanh(fc1)).",
        "see lessons/solutions/lesson10.py: adaln_block"),
    "logits_head": (
        "Before the head, one more AdaLN (scale and shift only, from the class); then a linear map to V logits.",
        "scale, shift = F.linear(F.silu(cond), W['head_nm.ada_lin.1.weight'], W[...bias]).view(B, 1, 2, C).unbind(2); "
        "F.linear(LN(x) * (1 + scale) + shift, W['head.weight'], W['head.bias']).",
        "see lessons/solutions/lesson10.py: logits_head"),
    "var_forward": (
        "The teacher-forced pass: the first token is the class embedding plus pos_start, the others are word_embed "
        "of the teacher-forcing input; every token adds its position and level embedding; the blocks run under the "
        "block-causal mask; the head gives the logits.",
        "cond = W['class_emb.weight'][labels]; x = cat(cond[:, None] + pos_start, F.linear(x_BLCv, word_embed)) + "
        "lvl_embed[lvl] + pos_1LC; bias = where(mask, 0, -inf); blocks; logits_head.",
        "see lessons/solutions/lesson10.py: var_forward"),
    "guided_logits": (
        "Classifier-free guidance on the doubled batch, with a strength that grows linearly from nothing at the first "
        "scale to cfg at the last.",
        "B = len // 2; t = cfg * si / (K - 1) (0 if K == 1); (1 + t) cond - t uncond.",
        "t = cfg * si / (K - 1) if K > 1 else 0.0; return (1 + t) * x[:B] - t * x[B:]"),
    "generate": (
        "Next-scale sampling with a KV cache: the class token first; at every scale run the blocks on this scale's "
        "tokens only (the cache holds the rest), guide, filter, sample, add the contribution to f_hat, and build the "
        "next scale's input from f_hat.",
        "labels_2B = cat(labels, full(num_classes)); cond = class_emb[labels_2B]; x = cond + pos_start + lvl_pos[:1]; "
        "cache = {}; per scale: blocks(x, cond, W, i, None, cache) -> logits_head -> raw; guided_logits; "
        "top_k_top_p; multinomial(softmax.view(-1, V), 1, replacement=True, generator=Generator().manual_seed(seed)); "
        "f_hat += phi_of_scale(up(E[idx])); x = word_embed(area-down(f_hat)) + lvl_pos[next scale], repeated twice.",
        "see lessons/solutions/lesson10.py: generate"),
}

"""Lesson 6 -- training: the teacher-forced loss per scale, the tokenizer's vq loss and whole loss, one VAR step, the
perceptual distance and the adversarial term's adaptive weight."""
import torch
import torch.nn.functional as F


def per_scale_cross_entropy(logits_BLV, target_BL, patch_nums):
    """(K,) mean cross-entropy of each scale's tokens."""
    B, L, V = logits_BLV.shape
    loss_BL = F.cross_entropy(logits_BLV.reshape(-1, V), target_BL.reshape(-1), reduction="none").view(B, L)
    losses, begin = [], 0
    for pn in patch_nums:
        end = begin + pn * pn
        losses.append(loss_BL[:, begin:end].mean())
        begin = end
    return torch.stack(losses)


def vq_loss(f_BCvHW, f_hats, beta):
    """(decoder input with the straight-through gradient, mean over scales of commitment + codebook terms)."""
    f_no_grad = f_BCvHW.detach()
    terms = [beta * F.mse_loss(f_hat.detach(), f_BCvHW) + F.mse_loss(f_hat, f_no_grad) for f_hat in f_hats]
    decoder_input = (f_hats[-1].detach() - f_no_grad) + f_BCvHW      # value of f_hat, gradient of f
    return decoder_input, sum(terms) / len(terms)


def tokenizer_loss(vqvae, img_B3HW, vq_loss):
    """(reconstruction MSE + vq loss, reconstruction): the tokenizer trainer's loss, with exercise 6.2's vq_loss."""
    f_BCvHW = vqvae.encode(img_B3HW)                               # encoder, then quant_conv
    f_hats = vqvae.quantize.f_to_f_hats(f_BCvHW)                   # f_hat after every scale (codebook, phi)
    decoder_input, vq = vq_loss(f_BCvHW, f_hats, vqvae.quantize.beta)
    recon_B3HW = vqvae.decoder(vqvae.post_quant_conv(decoder_input))
    return F.mse_loss(recon_B3HW, img_B3HW) + vq, recon_B3HW


def train_step(var, vqvae, token_maps, labels_B, optimizer, label_smoothing):
    """One teacher-forced step: true tokens as input (via f_hat) and as target, mean cross-entropy, one update."""
    with torch.no_grad():
        x_BLCv = vqvae.idx_to_var_input(token_maps)        # the teacher-forcing input (exercise 3.1)
    logits_BLV = var(labels_B, x_BLCv)
    target_BL = torch.cat(token_maps, dim=1)
    loss = F.cross_entropy(logits_BLV.flatten(0, 1), target_BL.flatten(), label_smoothing=label_smoothing)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def perceptual_distance(feats_x, feats_y):
    """(B,) sum over layers of the spatial mean of ||u(F_x) - u(F_y)||^2, u = unit length along the channels."""
    total = 0
    for fx_BChw, fy_BChw in zip(feats_x, feats_y):
        ux = fx_BChw / (fx_BChw.norm(dim=1, keepdim=True) + 1e-10)
        uy = fy_BChw / (fy_BChw.norm(dim=1, keepdim=True) + 1e-10)
        total = total + (ux - uy).square().sum(dim=1).mean(dim=(1, 2))
    return total


def adaptive_weight(rec_loss, g_loss, last_weight):
    """VQGAN's lambda: ||d rec / d w|| / (||d L_G / d w|| + 1e-4), clamped to [0, 1e4], a constant."""
    grad_rec = torch.autograd.grad(rec_loss, last_weight, retain_graph=True)[0]
    grad_g = torch.autograd.grad(g_loss, last_weight, retain_graph=True)[0]
    return (grad_rec.norm() / (grad_g.norm() + 1e-4)).clamp(0, 1e4).detach()

"""Lesson 6 -- training: the teacher-forced loss per scale and the tokenizer's vq loss."""
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

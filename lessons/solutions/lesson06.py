"""Lesson 6 -- training: the teacher-forced loss per scale and class dropout."""
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


def drop_labels(labels_B, drop_rate, num_classes, generator):
    """Each label becomes the unconditional class num_classes with probability drop_rate."""
    drop_B = torch.rand(labels_B.shape[0], generator=generator) < drop_rate
    return torch.where(drop_B, num_classes, labels_B)

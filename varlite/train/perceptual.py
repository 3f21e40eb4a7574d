"""A perceptual distance in the manner of LPIPS (Zhang et al., *The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric*, CVPR 2018), computed offline from a classifier that ships with varlite.

Dimension key: B batch, 3 RGB, H,W image side, C channels of one tapped layer, h,w its side.

For images x and y and the feature maps F_l (l = 1..n) of a frozen network:

    d(x, y) = sum_l  mean_{h,w}  || u(F_l(x))_hw - u(F_l(y))_hw ||^2,      u(v) = v / (||v||_2 + eps) over channels

Every position's feature vector is scaled to unit length along the channels, the squared distance of the two unit
vectors is averaged over the positions of the layer, and the layers are summed. For unit vectors
||a - b||^2 = 2 - 2 cos(a, b), so each term is a cosine distance in [0, 4].

LPIPS proper multiplies the squared difference by a learned weight per channel, calibrated on human judgements of
image pairs (the paper's "lin", "tune" and "scratch" variants); here every weight is 1, the uncalibrated distance of
the unweighted network features (the ``lpips`` package's ``LPIPS(lpips=False)``). The network is not the paper's
VGG / AlexNet (ImageNet weights are not shipped) but varlite's CIFAR-10 judge, ``builtin:cifar10``
(``varlite.train.classifier.DeepCNN``, trained on 32x32 CIFAR-10 images in [-1, 1]); the tapped layers are the last
activation at each of its four resolutions (32, 16, 8 and 4 pixels for a 32x32 input). Its convolutions take any
image side divisible by 8.

The network is frozen (eval mode, ``requires_grad`` False): a loss built on ``PerceptualDistance`` trains only what
made its inputs (the tokenizer's decoder), never the judge.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .classifier import load_classifier

PERCEPTUAL_NET = "builtin:cifar10"      # the network whose features the training loss compares
EPS = 1e-10                             # added to the channel norm (a zero feature vector stays zero)
ACTIVATIONS = (nn.GELU, nn.ReLU)


def unit_normalise(feat_BChw: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Every position's feature vector divided by its length along the channels: v / (||v||_2 + eps)."""
    return feat_BChw / (feat_BChw.norm(dim=1, keepdim=True) + eps)


def feature_distance(feats_x: list[torch.Tensor], feats_y: list[torch.Tensor]) -> torch.Tensor:
    """(B,) d(x, y) = sum over layers of the spatial mean of ||u(F_l(x)) - u(F_l(y))||^2 over channels, from the two
    images' feature maps, one (B, C, h, w) tensor per layer."""
    if len(feats_x) != len(feats_y):
        raise ValueError(f"expected the same number of layers for both images; got {len(feats_x)} and {len(feats_y)}")
    per_layer = [(unit_normalise(fx) - unit_normalise(fy)).square().sum(dim=1).mean(dim=(1, 2))
                 for fx, fy in zip(feats_x, feats_y)]
    return torch.stack(per_layer).sum(dim=0)


def _is_activation(layer: nn.Module) -> bool:
    """An activation module, or a block (``nn.Sequential``) that ends with one (SmallCNN's conv-norm-ReLU)."""
    return isinstance(layer, ACTIVATIONS) or (isinstance(layer, nn.Sequential) and isinstance(layer[-1], ACTIVATIONS))


class PerceptualDistance(nn.Module):
    """d(x, y) from the feature maps of a frozen classifier whose ``features`` is an ``nn.Sequential`` (varlite's
    ``DeepCNN`` and ``SmallCNN``): the output of the last activation at each spatial side, up to the global pool."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.layers = classifier.features
        self.eval().requires_grad_(False)

    def features(self, img_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """The tapped feature maps of images in [-1, 1], one (B, C, h, w) tensor per resolution, finest first."""
        taps: dict[tuple[int, int], torch.Tensor] = {}
        h = img_B3HW.contiguous(memory_format=torch.channels_last)     # the judge's weights are channels-last
        for layer in self.layers:
            if isinstance(layer, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)):
                break
            h = layer(h)
            if _is_activation(layer):
                taps[tuple(h.shape[-2:])] = h          # a later activation at the same side replaces the earlier
        return list(taps.values())

    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
        """(B,) d(x, y). Gradients flow to x and y (to whatever made them); the network's weights get none."""
        return feature_distance(self.features(x_B3HW), self.features(y_B3HW))


def load_perceptual(name: str = PERCEPTUAL_NET, device="cpu") -> PerceptualDistance:
    """The perceptual distance of a classifier: a shipped judge (``builtin:<dataset>``) or a train-classifier run."""
    classifier, _ = load_classifier(name, device)
    return PerceptualDistance(classifier)

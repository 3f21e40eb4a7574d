"""The adversarial (GAN) term of the tokenizer's loss: a small patch discriminator, the hinge loss, and the adaptive
weight that balances the adversarial gradient against the reconstruction's.

Dimension key: B batch, 3 RGB, H,W image side, C channels, h,w the side of the discriminator's logit map.

What comes from where:

- **The VAR paper** names the terms of its tokenizer's loss -- reconstruction, quantization, a perceptual loss and a
  discriminator (GAN) loss, each perceptual / GAN term with its weight -- and says the tokenizer keeps VQGAN's
  architecture with a multi-scale quantizer. It publishes no values for the weights, no discriminator architecture
  and no schedule, and the official repository (FoundationVision/VAR) releases no tokenizer training code.
- **VQGAN** (Esser et al., *Taming Transformers for High-Resolution Image Synthesis*, CVPR 2021; the
  taming-transformers code, ``taming/modules/losses/vqperceptual.py`` and ``taming/models/vqgan.py``) supplies what
  varlite follows here:

      D loss (hinge)    L_D = 1/2 [ mean relu(1 - D(x)) + mean relu(1 + D(x')) ]
      generator loss    L_G = - mean D(x')
      adaptive weight   lambda = clamp( ||grad_w L_rec|| / (||grad_w L_G|| + 1e-4), 0, 1e4 ),  no gradient through it
      tokenizer loss    L = L_rec + L_vq + w_gan * lambda * L_G           (the L_G term from step disc_start on)

  with w the weight of the decoder's last convolution (``decoder.conv_out.weight``), L_rec every term that compares
  x' with x (reconstruction, edge and perceptual), and both optimizers Adam with betas (0.5, 0.9). Before
  ``disc_start`` the GAN term is 0 and the discriminator is not trained (taming multiplies both losses by 0 there).
  The discriminator is pix2pix's "PatchGAN" (Isola et al., CVPR 2017), as taming's ``NLayerDiscriminator``.

Where varlite differs, for a small CPU run: the discriminator is narrower (32 channels at the first layer against
taming's 64) and uses GroupNorm instead of BatchNorm (no batch statistics: a logit depends on its own image only,
and evaluation computes what training did); its optimizer is AdamW without weight decay at a constant learning rate
(``--disc-lr``); and it is trained on the reconstructions of the generator's step, before the generator's update
(taming runs the autoencoder a second time for the discriminator's step), which saves a forward pass.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ADAPTIVE_EPS = 1e-4          # taming's denominator guard
ADAPTIVE_MAX = 1e4           # taming's clamp


def conv_block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    """conv4x4 (stride 2 halves the side; stride 1 shrinks it by one), GroupNorm, LeakyReLU(0.2)."""
    return [nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1, bias=False), nn.GroupNorm(8, c_out),
            nn.LeakyReLU(0.2)]


class PatchDiscriminator(nn.Module):
    """A PatchGAN: a grid of real/fake logits, each judging one patch of the image (B, 3, H, W) in [-1, 1].

        conv4x4/2 (3 -> w) LeakyReLU                       H/2
        conv4x4/2 (w -> 2w)  GroupNorm LeakyReLU           H/4
        conv4x4/1 (2w -> 4w) GroupNorm LeakyReLU           H/4 - 1
        conv4x4/1 (4w -> 1)                                H/4 - 2     (a 32x32 image: 6x6 logits)

    Each logit sees a 34x34 patch of the input (with zero padding at the border). Convolution weights start from
    N(0, 0.02), as in pix2pix and taming."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.layers = nn.Sequential(
            nn.Conv2d(3, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            *conv_block(w, 2 * w, stride=2), *conv_block(2 * w, 4 * w, stride=1),
            nn.Conv2d(4 * w, 1, 4, stride=1, padding=1))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) logits: high = "looks like a training image"."""
        return self.layers(img_B3HW)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_D = 1/2 [mean relu(1 - D(x)) + mean relu(1 + D(x'))]: zero once real logits are >= 1 and fake ones <= -1."""
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """L_G = -mean D(x'): the decoder is pushed to make its reconstructions look real to the discriminator."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_weight: torch.Tensor,
                    eps: float = ADAPTIVE_EPS, max_weight: float = ADAPTIVE_MAX) -> torch.Tensor:
    """lambda = clamp(||d rec_loss / d w|| / (||d g_loss / d w|| + eps), 0, max_weight), detached, with w the
    decoder's last layer: the adversarial gradient at the decoder's output is scaled to the reconstruction's size.
    The graph is kept (``retain_graph``) so the total loss can still be back-propagated."""
    grad_rec = torch.autograd.grad(rec_loss, last_weight, retain_graph=True)[0]
    grad_g = torch.autograd.grad(g_loss, last_weight, retain_graph=True)[0]
    return (grad_rec.norm() / (grad_g.norm() + eps)).clamp(0.0, max_weight).detach()

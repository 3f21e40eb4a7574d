"""The VQVAE tokenizer: a conv encoder, the multi-scale quantizer, a conv decoder.

Dimension key: B batch, 3 RGB, Hi,Wi image side, Cv latent channels, H,W latent side (= Hi / 2^(len(ch_mult)-1)),
l tokens of one scale.

    image (B,3,Hi,Wi) in [-1,1] --encoder--> --quant_conv--> f (B,Cv,H,W) --quantizer--> tokens r_1..r_K
    tokens --quantizer--> f_hat (B,Cv,H,W) --post_quant_conv--> --decoder--> image in [-1,1]

The conv nets are the VQGAN / latent-diffusion ones (ResNet blocks with GroupNorm(32) and SiLU, 2x down/upsampling,
single-head self-attention at the lowest resolution and in the middle). Parameter names follow the official
checkpoint ``vae_ch160v4096z32.pth`` so it loads with no renaming.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .configs import VQVAEConfig
from .quantizer import MultiScaleQuantizer
from .trace import EncodeStep


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))), with a 1x1 conv on the skip path when channels change."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x):
        # SiLU in place on the norm's output and the skip added in place to conv2's output: neither value is one that
        # autograd keeps, so training is unchanged, and inference allocates two fewer feature maps per block.
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        return h.add_(self.nin_shortcut(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions: x + proj(softmax(q k^T / sqrt(C)) v)."""

    def __init__(self, channels: int):
        super().__init__()
        self.C = channels
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x_BCHW):
        B, C, H, W = x_BCHW.shape
        q, k, v = self.qkv(self.norm(x_BCHW)).reshape(B, 3, C, H * W).unbind(1)   # each (B, C, HW)
        w_BNN = torch.bmm(q.permute(0, 2, 1), k).mul_(C ** -0.5).softmax(dim=2)  # w[b,i,j]: query i, key j
        h_BCN = torch.bmm(v, w_BNN.permute(0, 2, 1))                               # h[b,c,i] = sum_j v[b,c,j] w[b,i,j]
        return x_BCHW + self.proj_out(h_BCN.view(B, C, H, W))


class Downsample2x(nn.Module):
    """Pad right/bottom by one, then a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample2x(nn.Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 conv (padding 1) -- computed as four 2x2 convs of the small map.

    With u = up(x), u[2i+a, 2j+b] = x[i, j]. Output pixel (2i+a, 2j+b) sums the kernel's three rows over u's rows
    2i+a-1, 2i+a, 2i+a+1, which are only two rows of x: for a = 0, x row i-1 (kernel row 0) and x row i (rows 1 + 2);
    for a = 1, x row i (rows 0 + 1) and x row i+1 (row 2). Columns likewise with b. So each output phase (a, b) is a
    2x2 conv of x whose kernel is the 3x3 one with rows and columns summed by ``FOLD[a]`` and ``FOLD[b]``:

        y[:, :, a::2, b::2] = conv2x2(x, FOLD[a] @ W @ FOLD[b]^T, padding=1)[:, :, a:a+H, b:b+W]

    The same maths in 16 instead of 36 multiply-adds per output value and without the 4x larger upsampled map (the
    sums run in another order: values agree with ``conv(interpolate(x))`` to float rounding, ~1e-6). The 3x3
    parameters are the module's, so the official checkpoint loads unchanged and gradients flow to them."""

    FOLD = torch.tensor([[[1., 0., 0.], [0., 1., 1.]],      # a = 0: x rows i-1, i  <-  kernel rows {0}, {1, 2}
                         [[1., 1., 0.], [0., 0., 1.]]])     # a = 1: x rows i, i+1  <-  kernel rows {0, 1}, {2}

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x_BCHW):
        B, C, H, W = x_BCHW.shape
        fold = self.FOLD.to(x_BCHW)
        w_abOIpq = torch.einsum("apk,bql,oikl->aboipq", fold, fold, self.conv.weight)    # 4 kernels of 2x2
        y_BabOhw = F.conv2d(x_BCHW, w_abOIpq.reshape(4 * C, C, 2, 2), self.conv.bias.repeat(4), padding=1)
        y_BabOhw = y_BabOhw.view(B, 2, 2, C, H + 1, W + 1)
        channels_last = x_BCHW.is_contiguous(memory_format=torch.channels_last)
        out_BCHW = torch.empty((B, C, 2 * H, 2 * W), dtype=y_BabOhw.dtype, device=y_BabOhw.device,
                               memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for a in (0, 1):
            for b in (0, 1):
                out_BCHW[:, :, a::2, b::2] = y_BabOhw[:, a, b, :, a:a + H, b:b + W]
        return out_BCHW


def run_level(level: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """One resolution level of the encoder or decoder: its ResNet blocks, each followed by its attention block
    where the level has them (the lowest resolution, with ``using_sa``)."""
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[i](h)
    return h


class Encoder(nn.Module):
    """Image (B,3,Hi,Wi) -> features (B,Cv,H,W); one downsampling per level except the last."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        self.num_res_blocks = config.num_res_blocks
        self.conv_in = nn.Conv2d(config.in_channels, ch, kernel_size=3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for level, m in enumerate(mult):
            last = level == len(mult) - 1
            down = nn.Module()
            down.block, down.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(config.num_res_blocks):
                down.block.append(ResnetBlock(block_in, ch * m, config.dropout))
                block_in = ch * m
                if last and config.using_sa:
                    down.attn.append(AttnBlock(block_in))
            if not last:
                down.downsample = Downsample2x(block_in)
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, config.dropout)
        self.mid.attn_1 = AttnBlock(block_in) if config.using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, config.dropout)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.z_channels, kernel_size=3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for down in self.down:
            h = run_level(down, h)
            if hasattr(down, "downsample"):
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))


def lay_out_channels_last(module: nn.Module, incompatible_keys=None) -> None:
    """Put a module's 4-d weights in the channels-last memory format (the decoder's: see ``VQVAE.f_hat_to_img``).
    Also its load_state_dict post-hook: loading with ``assign=True`` hands over the file's tensors in their own
    (contiguous) layout, and every conv would then convert its weight on every call."""
    module.to(memory_format=torch.channels_last)


class Decoder(nn.Module):
    """Latent (B,Cv,H,W) -> image (B,3,Hi,Wi); the mirror of the encoder with one more ResNet block per level.
    Its weights are channels-last, like its activations, however it was built or loaded."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, kernel_size=3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, config.dropout)
        self.mid.attn_1 = AttnBlock(block_in) if config.using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, config.dropout)
        ups = []
        for level in reversed(range(len(mult))):     # built from the lowest resolution up ...
            up = nn.Module()
            up.block, up.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, ch * mult[level], config.dropout))
                block_in = ch * mult[level]
                if level == len(mult) - 1 and config.using_sa:
                    up.attn.append(AttnBlock(block_in))
            if level != 0:
                up.upsample = Upsample2x(block_in)
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)                  # ... but stored by level, as the official checkpoint is
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.in_channels, kernel_size=3, padding=1)
        lay_out_channels_last(self)
        self.register_load_state_dict_post_hook(lay_out_channels_last)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for up in reversed(self.up):
            h = run_level(up, h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))


class VQVAE(nn.Module):
    """The multi-scale VQVAE. Images are float (B,3,Hi,Wi) in [-1,1]; token maps are lists of (B, pn_k^2)."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = MultiScaleQuantizer(config)
        ks = config.quant_conv_ks
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, padding=ks // 2)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.config.patch_nums

    def check_image(self, img_B3HW: torch.Tensor) -> None:
        """Raise a clear error unless img is a float (B, 3, S, S) batch with S = config.image_size."""
        S = self.config.image_size
        if img_B3HW.ndim != 4 or img_B3HW.shape[1] != self.config.in_channels or tuple(img_B3HW.shape[2:]) != (S, S):
            raise ValueError(f"expected an image batch of shape (B, {self.config.in_channels}, {S}, {S}) with values "
                             f"in [-1, 1]; got shape {tuple(img_B3HW.shape)}. Resize/centre-crop to {S}x{S} first "
                             f"(varlite.images.prepare_image does both).")
        if not img_B3HW.is_floating_point():
            raise TypeError(f"expected a float image in [-1, 1]; got dtype {img_B3HW.dtype} (for uint8 use u8/255*2-1)")

    def encode(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """f = quant_conv(encoder(img)): the latent the quantizer sees, (B, Cv, H, W)."""
        self.check_image(img_B3HW)
        return self.quant_conv(self.encoder(img_B3HW))

    def f_hat_to_img(self, f_hat_BCvHW: torch.Tensor) -> torch.Tensor:
        """decoder(post_quant_conv(f_hat)), clamped to [-1, 1].

        The decoder runs in the channels-last memory format (same maths; oneDNN's convolutions need no layout
        conversions then): 17 % faster for d16's 256-px decoder on a CPU, values within 3e-5 of the default format."""
        h_BCvHW = self.post_quant_conv(f_hat_BCvHW).contiguous(memory_format=torch.channels_last)
        return self.decoder(h_BCvHW).clamp_(-1, 1)

    def img_to_idx(self, img_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """Image -> token maps r_1..r_K, each (B, pn_k^2)."""
        return self.quantize.f_to_idx_Bl(self.encode(img_B3HW))

    def img_to_f_hats(self, img_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """Image -> f_hat after every scale."""
        return self.quantize.f_to_f_hats(self.encode(img_B3HW))

    def idx_to_img(self, ms_idx_Bl: list[torch.Tensor], every_prefix: bool = False):
        """Token maps -> the decoded image (every_prefix=False) or the images decoded from every prefix r_1..r_k."""
        f_hats = self.quantize.idx_to_f_hats(ms_idx_Bl)
        if every_prefix:
            return [self.f_hat_to_img(f_hat) for f_hat in f_hats]
        return self.f_hat_to_img(f_hats[-1])

    def idx_to_var_input(self, ms_idx_Bl: list[torch.Tensor]) -> torch.Tensor:
        """Token maps -> the VAR teacher-forcing input (B, L - pn_1^2, Cv)."""
        return self.quantize.idx_to_var_input(ms_idx_Bl)

    def reconstruct(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """Encode, quantize at all K scales, decode: the tokenizer's reconstruction in [-1, 1]."""
        return self.f_hat_to_img(self.img_to_f_hats(img_B3HW)[-1])

    @torch.inference_mode()
    def decode_f_hat(self, f_hat_BCvHW: torch.Tensor) -> torch.Tensor:
        """The image decoded from f_hat, mapped from [-1, 1] to [0, 1] (for display)."""
        return self.f_hat_to_img(f_hat_BCvHW).add_(1).mul_(0.5)

    @torch.inference_mode()
    def encode_steps(self, img_B3HW: torch.Tensor) -> Iterator[EncodeStep]:
        """Yield one ``EncodeStep`` per scale while tokenizing ``img`` (float, [-1, 1]): the quantizer's loop, shown,
        with the input image (in [0, 1]) and this VQVAE's decoder attached to every step."""
        f_BCvHW = self.encode(img_B3HW)
        input01_B3HW = img_B3HW.add(1).mul(0.5)
        for step in self.quantize.residual_steps(f_BCvHW):
            yield dataclasses.replace(step, input_image=input01_B3HW, decoder=self.decode_f_hat)

    def forward(self, img_B3HW: torch.Tensor):
        """Training pass: (reconstruction without clamping, vq loss, tokens per scale).

        Under a bfloat16 autocast the conv nets run in bfloat16, but the quantizer always works in float32: a
        nearest-code search in bfloat16 (8 bits of mantissa) would pick different codes than inference does."""
        f_BCvHW = self.encode(img_B3HW)
        with torch.autocast(f_BCvHW.device.type, enabled=False):
            f_hat_BCvHW, vq_loss, ms_idx_Bl = self.quantize(f_BCvHW.float())
        return self.decoder(self.post_quant_conv(f_hat_BCvHW)), vq_loss, ms_idx_Bl

"""Training the multi-scale VQVAE tokenizer.

Dimension key: B batch, 3 RGB, Hi,Wi image side, Cv latent channels, H,W latent side, K scales, V vocabulary.

Loss (images x in [-1, 1], reconstruction x' = decoder(straight-through f_hat)):

    loss = rec(x', x) + vq_loss + w_edge * edge(x', x)
    rec  = mean (x' - x)^2   ("mse", default: PSNR is a function of it)  or  mean |x' - x|  ("l1")
    vq_loss = (1/K) sum_k [ beta ||sg(f_hat_k) - f||^2 + ||f_hat_k - sg(f)||^2 ]     (see MultiScaleQuantizer)
    edge = mean |dx(x') - dx(x)| + mean |dy(x') - dy(x)|   (finite differences; off by default, w_edge = 0)

Codebook bookkeeping after every step:
- usage per scale: ``ema_vocab_hit_SV[k] = 0.99 ema + 0.01 bincount(r_k)`` (the official statistic);
- dead codes: a code not chosen at any scale for ``dead_after`` steps is re-initialised (checked every
  ``restart_every`` steps) to a random vector the quantizer was given in this step's batch (one position of some
  scale's target: the rest f - f_hat, area-downsampled to that scale), and its AdamW moments are reset. At step 0
  every code counts as dead, so the codebook starts from data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from varlite.builtin import builtin_preset, load_builtin
from varlite.core.configs import get_preset
from varlite.data import to_pm1
from varlite.core.vqvae import VQVAE

from ..safe_io import CheckpointError
from .checkpoint import load_checkpoint
from .grid import save_grid
from .loop import LoopConfig, Trainer, load_checked
from .metrics import codebook_stats, psnr, ssim


@dataclass
class TokenizerTrainConfig(LoopConfig):
    preset: str = "shapes"
    dataset: str = "shapes"
    data_root: str | None = None
    recon_loss: str = "mse"          # mse | l1
    edge_loss_weight: float = 0.0    # weight of the finite-difference edge loss (0 = off)
    dead_after: int = 200            # steps without a hit after which a code is re-initialised
    restart_every: int = 50          # how often dead codes are looked for (0 = never)
    hflip: bool = False              # random horizontal flips (not for Shapes: its classes have a side)
    eval_images: int = 1000          # held-out images used by the periodic evaluation

    def __post_init__(self):
        super().__post_init__()
        if self.recon_loss not in ("mse", "l1"):
            raise ValueError(f"recon_loss must be 'mse' or 'l1', got {self.recon_loss!r}")


def edge_loss(x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
    """mean |dx(x) - dx(y)| + mean |dy(x) - dy(y)| with forward differences along width and height."""
    dx = (x_B3HW[..., :, 1:] - x_B3HW[..., :, :-1]) - (y_B3HW[..., :, 1:] - y_B3HW[..., :, :-1])
    dy = (x_B3HW[..., 1:, :] - x_B3HW[..., :-1, :]) - (y_B3HW[..., 1:, :] - y_B3HW[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def images_at(dataset, idx_b: torch.Tensor, device, hflip_generator: torch.Generator | None = None) -> torch.Tensor:
    """The float [-1, 1] images of ``dataset`` at ``idx_b``; flipped left-right at random when a generator is given."""
    img = to_pm1(dataset.images_u8[idx_b.cpu()])
    if hflip_generator is not None:
        flip_b = torch.rand(len(img), generator=hflip_generator) < 0.5
        img = torch.where(flip_b.view(-1, 1, 1, 1), img.flip(-1), img)
    return img.to(device)


class TokenizerTrainer(Trainer):
    kind = "tokenizer"
    label = "train-tokenizer"
    bar_keys = ("loss", "rec", "vq", "psnr")

    def __init__(self, config: TokenizerTrainConfig, distributed=None):
        super().__init__(config, distributed)
        self.preset = get_preset(config.preset)
        vq_config = self.preset.vqvae
        self.train_set = load_checked(config.dataset, "train", config.data_root, vq_config.image_size)
        self.val_set = load_checked(config.dataset, "test", config.data_root, vq_config.image_size) \
            if self.dist.main else None
        torch.manual_seed(config.seed)
        self.model = VQVAE(vq_config).to(self.device)
        self.train_module = self.wrap_ddp(self.model)
        self.optimizer = self.make_optimizer(self.model)
        self.num_items = len(self.train_set)
        V = vq_config.vocab_size
        self.last_hit_V = torch.full((V,), -config.dead_after, dtype=torch.long)   # all dead at step 0: init from data
        self.codes_restarted = 0

    def checkpoint_configs(self):
        return {"train": super().checkpoint_configs()["train"], "vqvae": self.preset.vqvae.__dict__.copy()}

    def extra_state(self):
        return {"last_hit_V": self.last_hit_V.clone(), "codes_restarted": self.codes_restarted}

    def load_extra_state(self, state):
        self.last_hit_V = state["last_hit_V"].clone()
        self.codes_restarted = int(state["codes_restarted"])

    def compute_loss(self, idx_b, step):
        config = self.config
        g = torch.Generator().manual_seed(config.seed * 7919 + step * 4099 + self.dist.rank) if config.hflip else None
        img = images_at(self.train_set, idx_b, self.device, g)
        recon, vq_loss, ms_idx_Bl = self.train_module(img)
        rec = F.mse_loss(recon, img) if config.recon_loss == "mse" else F.l1_loss(recon, img)
        loss = rec + vq_loss
        logs = {"loss": 0.0, "rec": rec.item(), "vq": vq_loss.item()}
        if config.edge_loss_weight > 0:
            edge = edge_loss(recon, img)
            loss = loss + config.edge_loss_weight * edge
            logs["edge"] = edge.item()
        with torch.no_grad():
            logs["psnr"] = float(psnr(recon.clamp(-1, 1).add(1).div(2), img.add(1).div(2)).mean())
        logs["loss"] = loss.item()
        self._batch, self._ms_idx_Bl = img, ms_idx_Bl
        return loss, logs

    @torch.no_grad()
    def after_step(self, step):
        quantize = self.model.quantize
        V = quantize.vocab_size
        hits_KV = torch.stack([torch.bincount(idx.flatten(), minlength=V) for idx in self._ms_idx_Bl]).float()
        if self.dist.active:
            dist.all_reduce(hits_KV)
        quantize.ema_vocab_hit_SV.mul_(0.99).add_(hits_KV, alpha=0.01)
        if self.config.restart_every and step % self.config.restart_every == 0:
            self.restart_dead_codes(step)
        self.last_hit_V[hits_KV.sum(0).cpu() > 0] = step

    @torch.no_grad()
    def restart_dead_codes(self, step: int) -> None:
        """Re-initialise codes unused for ``dead_after`` steps to random vectors the quantizer was given in this
        batch (positions of the scales' targets)."""
        dead_V = (step - self.last_hit_V) >= self.config.dead_after
        n = int(dead_V.sum())
        if n == 0:
            return
        quantize = self.model.quantize
        f = self.model.encode(self._batch)
        targets_NCv = torch.cat([q.target.permute(0, 2, 3, 1).reshape(-1, quantize.Cv)
                                 for q in quantize.residual_steps(f)])
        g = torch.Generator().manual_seed(self.config.seed * 7919 + step)
        new_nCv = targets_NCv[torch.randint(len(targets_NCv), (n,), generator=g).to(targets_NCv.device)].contiguous()
        if self.dist.active:
            dist.broadcast(new_nCv, src=0)
        weight = quantize.embedding.weight
        dead_dev = dead_V.to(weight.device)
        weight.data[dead_dev] = new_nCv
        for moment in self.optimizer.state.get(weight, {}).values():
            if torch.is_tensor(moment) and moment.shape == weight.shape:
                moment[dead_dev] = 0
        self.last_hit_V[dead_V] = step
        self.codes_restarted += n

    def evaluate(self):
        return evaluate_tokenizer(self.model, self.val_set, self.config.eval_images, self.device)

    @torch.no_grad()
    def write_samples(self, step):
        """Rows: the first 10 held-out images, then what every prefix r_1..r_k of their tokens decodes to."""
        self.model.eval()
        img = images_at(self.val_set, torch.arange(min(10, len(self.val_set))), self.device)
        prefixes = self.model.idx_to_img(self.model.img_to_idx(img), every_prefix=True)
        rows = torch.cat([img] + prefixes).add(1).div(2)
        save_grid(rows, len(img), self.run_dir / f"samples_{step:06d}.png")


@torch.no_grad()
def evaluate_tokenizer(vqvae: VQVAE, dataset, max_images: int = 0, device="cpu", batch_size: int = 100) -> dict:
    """PSNR and SSIM (mean over images, [0,1] range) of the reconstructions of ``dataset`` (its first
    ``max_images``; 0 = all), and codebook usage / perplexity per scale."""
    vqvae.eval()
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    psnrs, ssims, idx_per_scale = [], [], [[] for _ in vqvae.patch_nums]
    for start in range(0, n, batch_size):
        img = images_at(dataset, torch.arange(start, min(n, start + batch_size)), device)
        ms_idx_Bl = vqvae.img_to_idx(img)
        recon01, img01 = vqvae.idx_to_img(ms_idx_Bl).add(1).div(2), img.add(1).div(2)
        psnrs.append(psnr(recon01, img01))
        ssims.append(ssim(recon01, img01))
        for k, idx in enumerate(ms_idx_Bl):
            idx_per_scale[k].append(idx.cpu())
    stats = codebook_stats([torch.cat(i) for i in idx_per_scale], vqvae.config.vocab_size)
    out = {"psnr": float(torch.cat(psnrs).mean()), "ssim": float(torch.cat(ssims).mean()), "images": n}
    for k, s in enumerate(stats):
        out[f"usage_s{k + 1}"] = s["usage"]
        out[f"perplexity_s{k + 1}"] = s["perplexity"]
    return out


def load_tokenizer(path, device="cpu") -> tuple[VQVAE, dict]:
    """The VQVAE of a tokenizer checkpoint (a file, or a run dir holding checkpoint.pt), or of a shipped model
    (``builtin:<name>``), in eval mode, and the checkpoint's configs."""
    if str(path).startswith("builtin:"):
        name = str(path).removeprefix("builtin:")
        vqvae, _ = load_builtin(name, device)
        return vqvae, {"train": {"preset": builtin_preset(name)}, "vqvae": vqvae.config.__dict__.copy()}
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    ckpt = load_checkpoint(path, "tokenizer")
    preset = get_preset(ckpt["configs"]["train"]["preset"])
    vqvae = VQVAE(preset.vqvae)
    try:
        vqvae.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit preset {preset.name!r}'s VQVAE ({str(err)[:300]})") from err
    return vqvae.to(device).eval(), ckpt["configs"]

"""Training the multi-scale VQVAE tokenizer.

Dimension key: B batch, 3 RGB, Hi,Wi image side, Cv latent channels, H,W latent side, K scales, V vocabulary.

Loss (images x in [-1, 1], reconstruction x' = decoder(straight-through f_hat)):

    loss = rec(x', x) + vq_loss + w_edge * edge(x', x) + w_perc * perc(x', x) + w_gan * lambda * L_G(x')
    rec  = mean (x' - x)^2   ("mse", default: PSNR is a function of it)  or  mean |x' - x|  ("l1")
    vq_loss = (1/K) sum_k [ beta ||sg(f_hat_k) - f||^2 + ||f_hat_k - sg(f)||^2 ]     (see MultiScaleQuantizer)
    edge = mean |dx(x') - dx(x)| + mean |dy(x') - dy(x)|   (finite differences; off by default, w_edge = 0)
    perc = the LPIPS-style distance of the CIFAR-10 judge's features (``perceptual``; off by default, w_perc = 0)
    L_G  = -mean D(x'), a patch discriminator D trained with the hinge loss beside the tokenizer, weighted by VQGAN's
           adaptive lambda, from step ``disc_start`` on (``discriminator``; off by default, w_gan = 0)

The perceptual and GAN terms are the rest of the compound loss the VAR paper trains its tokenizer with; what is the
paper's and what follows VQGAN's code is in ``varlite.train.discriminator``. Data-parallel runs (torchrun) take the
perceptual term, but refuse the GAN term: the adaptive weight's extra gradient passes and the discriminator's own
optimizer are written for one process.

A term that is off leaves no trace: the loss is computed exactly as without the option, and the option is not
written into the checkpoint's config, so runs from before these options resume. A run with a term on resumes only
with the same loss options (a clear error names what changed).

Codebook bookkeeping after every step:
- usage per scale: ``ema_vocab_hit_SV[k] = 0.99 ema + 0.01 bincount(r_k)`` (the official statistic);
- dead codes: a code not chosen at any scale for ``dead_after`` steps is re-initialised (checked every
  ``restart_every`` steps) to a random vector the quantizer was given in this step's batch (one position of some
  scale's target: the rest f - f_hat, area-downsampled to that scale), and its AdamW moments are reset. At step 0
  every code counts as dead, so the codebook starts from data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from varlite.builtin import builtin_preset, load_builtin
from varlite.core.configs import get_preset
from varlite.data import images_at
from varlite.core.vqvae import VQVAE

from ..safe_io import CheckpointError
from .checkpoint import load_checkpoint
from .discriminator import PatchDiscriminator, adaptive_weight, generator_loss, hinge_d_loss
from .grid import save_grid
from .loop import LoopConfig, Trainer, load_checked
from .metrics import codebook_stats, psnr, ssim
from .perceptual import PERCEPTUAL_NET, load_perceptual

# The loss options written into a checkpoint's config only when their term is on (see the module docstring).
PERCEPTUAL_OPTIONS = ("perceptual_weight",)
GAN_OPTIONS = ("gan_weight", "disc_start", "disc_lr")


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
    perceptual_weight: float = 0.0   # weight of the LPIPS-style distance of the CIFAR-10 judge's features (0 = off)
    gan_weight: float = 0.0          # weight of the adversarial term, times the adaptive lambda (0 = off)
    disc_start: int = 0              # the step from which the GAN term is on and the discriminator trains
    disc_lr: float = 2e-4            # the discriminator's learning rate (constant)

    def __post_init__(self):
        super().__post_init__()
        if self.recon_loss not in ("mse", "l1"):
            raise ValueError(f"recon_loss must be 'mse' or 'l1', got {self.recon_loss!r}")
        for name in ("perceptual_weight", "gan_weight", "disc_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0) or \
                    (name == "disc_lr" and value == 0):
                allowed = "> 0" if name == "disc_lr" else ">= 0 (0 = off)"
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number {allowed}; got {value!r}")
        if not (isinstance(self.disc_start, int) and 0 <= self.disc_start <= 2 ** 63 - 1):
            raise ValueError(f"--disc-start must be an integer >= 0; got {self.disc_start!r}")


def edge_loss(x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
    """mean |dx(x) - dx(y)| + mean |dy(x) - dy(y)| with forward differences along width and height."""
    dx = (x_B3HW[..., :, 1:] - x_B3HW[..., :, :-1]) - (y_B3HW[..., :, 1:] - y_B3HW[..., :, :-1])
    dy = (x_B3HW[..., 1:, :] - x_B3HW[..., :-1, :]) - (y_B3HW[..., 1:, :] - y_B3HW[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


class TokenizerTrainer(Trainer):
    kind = "tokenizer"
    label = "train-tokenizer"
    bar_keys = ("loss", "rec", "vq", "psnr")

    def __init__(self, config: TokenizerTrainConfig, distributed=None):
        super().__init__(config, distributed)
        if config.gan_weight > 0 and self.dist.active:
            raise ValueError("--gan-weight is not supported in a data-parallel (torchrun) run: the adaptive weight and "
                             "the discriminator's optimizer are written for one process. Train with one process, or "
                             "leave --gan-weight at 0 (--perceptual-weight works under torchrun).")
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
        self.perceptual = load_perceptual(PERCEPTUAL_NET, self.device) if config.perceptual_weight > 0 else None
        self.discriminator = self.disc_optimizer = None
        if config.gan_weight > 0:
            with torch.random.fork_rng(devices=[]):      # its initial weights draw from their own seed
                torch.manual_seed(config.seed + 1)
                self.discriminator = PatchDiscriminator().to(self.device)
            self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=config.disc_lr,
                                                    betas=(0.5, 0.9), weight_decay=0.0)

    def checkpoint_configs(self):
        """The train config without the loss options whose term is off, and the VQVAE config."""
        train = super().checkpoint_configs()["train"]
        off = (PERCEPTUAL_OPTIONS if self.perceptual is None else ()) + (GAN_OPTIONS if self.discriminator is None
                                                                         else ())
        return {"train": {k: v for k, v in train.items() if k not in off}, "vqvae": self.preset.vqvae.__dict__.copy()}

    def check_resumable(self, saved_configs: dict) -> None:
        """As ``Trainer.check_resumable``, first checking that the checkpoint was trained with the same loss options
        (a term that was off is absent from its config), so that a changed loss is named as such."""
        saved, now = saved_configs.get("train", {}), self.checkpoint_configs()["train"]
        options = PERCEPTUAL_OPTIONS + GAN_OPTIONS
        if any(saved.get(k) != now.get(k) for k in options):
            def described(config):
                return " ".join(f"--{k.replace('_', '-')} {config[k]}" for k in options if k in config) or \
                    "neither the perceptual nor the GAN term"
            raise CheckpointError(f"{self.ckpt_path} was trained with {described(saved)}, but this run asks for "
                                  f"{described(now)}. The loss cannot change in the middle of a run: resume with "
                                  f"the same loss options, or start a new run directory.")
        super().check_resumable(saved_configs)

    def extra_state(self):
        state = {"last_hit_V": self.last_hit_V.clone(), "codes_restarted": self.codes_restarted}
        if self.discriminator is not None:
            state.update(discriminator=self.discriminator.state_dict(),
                         disc_optimizer=self.disc_optimizer.state_dict())
        return state

    def load_extra_state(self, state):
        self.last_hit_V = state["last_hit_V"].clone()
        self.codes_restarted = int(state["codes_restarted"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])

    def gan_on(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.config.disc_start

    def compute_loss(self, idx_b, step):
        config = self.config
        g = torch.Generator().manual_seed(config.seed * 7919 + step * 4099 + self.dist.rank) if config.hflip else None
        img = images_at(self.train_set, idx_b, self.device, g)
        recon, vq_loss, ms_idx_Bl = self.train_module(img)
        rec = F.mse_loss(recon, img) if config.recon_loss == "mse" else F.l1_loss(recon, img)
        loss = rec + vq_loss
        rec_terms = rec                  # every term comparing x' with x: the adaptive weight's reference
        logs = {"loss": 0.0, "rec": rec.item(), "vq": vq_loss.item()}
        if config.edge_loss_weight > 0:
            edge = edge_loss(recon, img)
            loss = loss + config.edge_loss_weight * edge
            rec_terms = rec_terms + config.edge_loss_weight * edge
            logs["edge"] = edge.item()
        if self.perceptual is not None:
            perc = self.perceptual(recon, img).mean()
            loss = loss + config.perceptual_weight * perc
            rec_terms = rec_terms + config.perceptual_weight * perc
            logs["perc"] = perc.item()
        if self.gan_on(step):
            self.discriminator.requires_grad_(False)     # the generator's loss trains the decoder, not D
            g_loss = generator_loss(self.discriminator(recon))
            weight = adaptive_weight(rec_terms, g_loss, self.model.decoder.conv_out.weight)
            loss = loss + config.gan_weight * weight * g_loss
            logs.update({"gan_g": g_loss.item(), "lambda": weight.item()})
        with torch.no_grad():
            logs["psnr"] = float(psnr(recon.clamp(-1, 1).add(1).div(2), img.add(1).div(2)).mean())
        logs["loss"] = loss.item()
        self._batch, self._recon, self._ms_idx_Bl = img, recon.detach(), ms_idx_Bl
        return loss, logs

    def train_step(self, idx_b, step):
        """The loop's step of the tokenizer, then (with the GAN term on) one step of the discriminator."""
        logs = super().train_step(idx_b, step)
        if self.gan_on(step):
            logs["gan_d"] = self.discriminator_step()
        return logs

    def discriminator_step(self) -> float:
        """One AdamW step of D on the hinge loss: this step's images as real, their reconstructions as fake."""
        self.discriminator.requires_grad_(True).train()
        with self.autocast():
            d_loss = hinge_d_loss(self.discriminator(self._batch), self.discriminator(self._recon))
        self.disc_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.disc_optimizer.step()
        return d_loss.item()

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

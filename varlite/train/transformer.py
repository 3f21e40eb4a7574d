"""Training the VAR transformer by teacher forcing on the token maps of a frozen tokenizer.

Dimension key: B batch, N dataset size, L all tokens, K scales, V vocabulary, Cv latent channels.

The tokenizer is frozen, so every image's token maps r_1..r_K are computed once, the first time the image is
used, and cached in the run dir (``tokens_<split>.pt``: an (N, L) int16 tensor and the tokenizer's fingerprint;
it is started afresh when the tokenizer changes). From the second epoch on a step costs only the transformer:

    x_in   = vqvae.idx_to_var_input(r_1..r_K)               (B, L - 1, Cv), no gradient
    logits = var(labels, x_in)                                (B, L, V); labels dropped with p = cond_drop_rate
    loss   = mean over the B L tokens of CE(logits, r, label_smoothing)

Logged as the official trainer does: loss/accuracy over all tokens and over the last scale ("tail"), and per scale.
Validation uses the held-out split's tokens, no label dropout, no smoothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from varlite.configs import get_preset
from varlite.var import VAR
from varlite.vqvae import VQVAE

from .checkpoint import CheckpointError, load_checkpoint
from .grid import save_grid
from .loop import LoopConfig, Trainer, load_checked, state_fingerprint
from .metrics import per_scale_loss_acc, scale_logs
from .tokenizer import images_at, load_tokenizer


@dataclass
class VarTrainConfig(LoopConfig):
    preset: str = "shapes"
    tokenizer: str = ""              # the tokenizer run dir (or its checkpoint.pt)
    dataset: str = "shapes"
    data_root: str | None = None
    label_smoothing: float = 0.1
    weight_decay: float = 0.05
    lr: float = 6e-4
    sample_cfg: float = 1.5          # guidance of the periodic sample grids
    samples_per_class: int = 8
    eval_images: int = 1000


class TokenCache:
    """The token maps (N, L) int16 of a dataset under a frozen tokenizer, each computed the first time its image is
    used and kept from then on; saved to ``path`` (with the tokenizer's fingerprint) by ``save()``.

    In a data-parallel run every process encodes the new images of its share of the batch and all processes then
    exchange them, so every process holds the same cache (process 0 saves it).
    """

    def __init__(self, vqvae, dataset, path: Path | None = None, distributed=None, batch_size: int = 250):
        self.vqvae, self.dataset, self.dist, self.batch_size = vqvae, dataset, distributed, batch_size
        self.path = Path(path) if path is not None else None
        self.fingerprint = state_fingerprint(vqvae)
        self.L = sum(pn * pn for pn in vqvae.patch_nums)
        self.labels_N = dataset.labels.clone()
        saved = None
        if self.path is not None and self.path.exists():
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        if saved is not None and saved.get("tokenizer") == self.fingerprint and tuple(saved["idx_NL"].shape) == (len(dataset), self.L):
            self.idx_NL = saved["idx_NL"]
        else:
            self.idx_NL = torch.full((len(dataset), self.L), -1, dtype=torch.int16)    # -1: not encoded yet

    @property
    def num_encoded(self) -> int:
        return int((self.idx_NL[:, 0] >= 0).sum())

    @torch.no_grad()
    def get(self, idx_b: torch.Tensor) -> torch.Tensor:
        """Tokens (b, L) int64 of items ``idx_b``, encoding (and keeping) those not seen before."""
        idx_b = idx_b.cpu()
        missing = idx_b[self.idx_NL[idx_b, 0] < 0].unique()
        device = next(self.vqvae.parameters()).device
        new = []
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            self.vqvae.eval()
            img = images_at(self.dataset, chunk, device)
            new.append((chunk, torch.cat(self.vqvae.img_to_idx(img), dim=1).to(torch.int16).cpu()))
        shares = self.dist.gather(new) if self.dist is not None else [new]
        for share in shares:
            for chunk, tokens in share:
                self.idx_NL[chunk] = tokens
        return self.idx_NL[idx_b].long()

    def save(self) -> None:
        if self.path is None:
            raise ValueError("this token cache was made without a path; nothing to save it to")
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save({"tokenizer": self.fingerprint, "idx_NL": self.idx_NL}, tmp)
        tmp.replace(self.path)


def split_scales(idx_BL: torch.Tensor, begin_ends) -> list[torch.Tensor]:
    """(B, L) -> [r_1 (B, pn_1^2), ..., r_K (B, pn_K^2)] as int64."""
    return [idx_BL[:, b:e].long() for b, e in begin_ends]


class VarTrainer(Trainer):
    kind = "var"
    label = "train-var"
    bar_keys = ("loss", "acc", "loss_last", "acc_last")

    def __init__(self, cfg: VarTrainConfig, distributed=None):
        super().__init__(cfg, distributed)
        if not cfg.tokenizer:
            raise ValueError("train-var needs --tokenizer <run dir of train-tokenizer (or its checkpoint.pt)>")
        self.preset = get_preset(cfg.preset)
        self.vqvae, tok_configs = load_tokenizer(cfg.tokenizer, self.device)
        if tok_configs["train"]["preset"] != cfg.preset:
            raise CheckpointError(f"the tokenizer in {cfg.tokenizer} was trained for preset "
                                  f"{tok_configs['train']['preset']!r}, not {cfg.preset!r}")
        for p in self.vqvae.parameters():
            p.requires_grad_(False)
        var_cfg = self.preset.var
        image_size = self.preset.vqvae.image_size
        train_set = load_checked(cfg.dataset, "train", cfg.data_root, image_size, var_cfg.num_classes)
        val_set = load_checked(cfg.dataset, "test", cfg.data_root, image_size, var_cfg.num_classes)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = TokenCache(self.vqvae, train_set, self.run_dir / "tokens_train.pt", self.dist)
        self.val_tokens = None
        if self.dist.main:
            self.val_tokens = TokenCache(self.vqvae, val_set, self.run_dir / "tokens_test.pt")
            n_val = len(val_set) if cfg.eval_images <= 0 else min(cfg.eval_images, len(val_set))
            self.val_tokens.get(torch.arange(n_val))
            self.val_tokens.save()
        self.tokenizer_fingerprint = state_fingerprint(self.vqvae)
        torch.manual_seed(cfg.seed)
        self.model = VAR(var_cfg, self.vqvae).to(self.device)
        self.model.init_weights()
        self.train_module = self.wrap_ddp(self.model)
        self.optimizer = self.make_optimizer(self.model)
        self.num_items = len(train_set)

    def checkpoint_configs(self):
        return {"train": super().checkpoint_configs()["train"], "vqvae": self.preset.vqvae.__dict__.copy(),
                "var": self.preset.var.__dict__.copy()}

    def state(self, step):
        state = super().state(step)
        state["vqvae"] = self.vqvae.state_dict()        # a VAR checkpoint is self-contained
        return state

    def save(self, step):
        if self.dist.main:
            self.tokens.save()
        super().save(step)

    def extra_state(self):
        return {"tokenizer_fingerprint": self.tokenizer_fingerprint}

    def load_extra_state(self, state):
        if state["tokenizer_fingerprint"] != self.tokenizer_fingerprint:
            raise CheckpointError(f"{self.ckpt_path} was trained on the tokens of a different tokenizer than "
                                  f"{self.cfg.tokenizer}; resume with the same tokenizer or use a new run dir")

    def compute_loss(self, idx_b, step):
        cfg, begin_ends = self.cfg, self.model.begin_ends
        idx_bL = self.tokens.get(idx_b).to(self.device)
        labels_b = self.tokens.labels_N[idx_b.cpu()].to(self.device)
        with torch.no_grad():
            x_in = self.vqvae.idx_to_var_input(split_scales(idx_bL, begin_ends))
        logits_bLV = self.train_module(labels_b, x_in)
        loss_bL, loss_K, acc_K = per_scale_loss_acc(logits_bLV, idx_bL, begin_ends, cfg.label_smoothing)
        return loss_bL.mean(), scale_logs("", loss_bL.detach(), loss_K, acc_K, begin_ends)

    def evaluate(self):
        n = self.val_tokens.num_encoded
        return evaluate_var(self.model, self.val_tokens.idx_NL[:n], self.val_tokens.labels_N[:n], 0, self.device)

    def write_samples(self, step):
        self.model.eval()
        images = sample_grid_images(self.model, self.cfg.samples_per_class, self.cfg.sample_cfg, seed=0)
        save_grid(images, self.cfg.samples_per_class, self.run_dir / f"samples_{step:06d}.png")


@torch.no_grad()
def evaluate_var(var: VAR, idx_NL: torch.Tensor, labels_N: torch.Tensor, max_items: int = 0, device="cpu",
                 batch_size: int = 100) -> dict:
    """Validation loss (no label smoothing) and accuracy over all tokens, the last scale, and every scale."""
    var.eval()
    n = len(idx_NL) if max_items <= 0 else min(max_items, len(idx_NL))
    begin_ends = var.begin_ends
    loss_sum_K = torch.zeros(len(begin_ends), dtype=torch.float64)
    acc_sum_K = torch.zeros(len(begin_ends), dtype=torch.float64)
    for start in range(0, n, batch_size):
        idx_BL = idx_NL[start:start + batch_size][: n - start].long().to(device)
        labels_B = labels_N[start:start + batch_size][: n - start].to(device)
        logits = var(labels_B, var.vqvae.idx_to_var_input(split_scales(idx_BL, begin_ends)))
        _, loss_K, acc_K = per_scale_loss_acc(logits, idx_BL, begin_ends)
        loss_sum_K += loss_K.double().cpu() * len(idx_BL)
        acc_sum_K += acc_K.double().cpu() * len(idx_BL)
    loss_K, acc_K = (loss_sum_K / n).float(), (acc_sum_K / n).float()
    L = begin_ends[-1][1]
    sizes_K = torch.tensor([(e - b) for b, e in begin_ends], dtype=torch.float32)
    out = {"val_loss": float((loss_K * sizes_K).sum() / L), "val_loss_last": float(loss_K[-1]),
           "val_acc": float((acc_K * sizes_K).sum() / L), "val_acc_last": float(acc_K[-1]), "images": n}
    for k in range(len(begin_ends)):
        out[f"val_loss_s{k + 1}"] = float(loss_K[k])
        out[f"val_acc_s{k + 1}"] = float(acc_K[k])
    return out


@torch.no_grad()
def sample_grid_images(var: VAR, per_class: int, cfg: float, seed: int = 0, top_k: int = 0, top_p: float = 0.0):
    """num_classes x per_class generated images in [0, 1], class by class (row c = class c)."""
    labels = torch.arange(var.num_classes).repeat_interleave(per_class)
    return var.generate(labels, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed)


def load_var(path, device="cpu") -> tuple[VAR, dict]:
    """The (VQVAE, VAR) pair of a VAR checkpoint (file or run dir) in eval mode: returns (var, configs);
    the VQVAE is ``var.vqvae``."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    ckpt = load_checkpoint(path, "var")
    preset = get_preset(ckpt["configs"]["train"]["preset"])
    vqvae = VQVAE(preset.vqvae)
    var = VAR(preset.var, vqvae)
    try:
        vqvae.load_state_dict(ckpt["vqvae"])
        var.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit preset {preset.name!r} ({str(err)[:300]})") from err
    vqvae.to(device).eval()
    return var.to(device).eval(), ckpt["configs"]

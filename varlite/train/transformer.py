"""Training the VAR transformer by teacher forcing on the token maps of a frozen tokenizer.

Dimension key: B batch, N dataset size, L all tokens, K scales, V vocabulary, Cv latent channels.

The tokenizer is frozen, so every image's token maps r_1..r_K are computed once, the first time the image is
used, and cached in the run dir (``tokens_<split>.pt``: an (N, L) int16 tensor and the tokenizer's fingerprint;
it is started afresh when the tokenizer changes). With ``--hflip`` the cache holds 2N rows: row N + i is image i
flipped left-right, and each step picks the flipped or the plain tokens of an image with probability 1/2 (a flip
changes the tokens, not just their order: the encoder is not flip-equivariant). From the second epoch on a step
costs only the transformer:

    x_in   = vqvae.idx_to_var_input(r_1..r_K)               (B, L - 1, Cv), no gradient, float32
    logits = var(labels, x_in)                                (B, L, V); labels dropped with p = cond_drop_rate
    loss   = mean over the B L tokens of CE(logits, r, label_smoothing)

Tokens and x_in are always computed in float32 (even with ``--precision bf16``, which runs only the transformer
under autocast), so training sees exactly the inputs that generation builds.

``--init-from`` starts a new run from the weights of another VAR run (or ``builtin:<name>``) of the same config:
the way to continue a shipped model when its run dir is gone (give it a short ``--warmup-steps``).

Logged as the official trainer does: loss/accuracy over all tokens and over the last scale ("tail"), and per scale.
Validation uses the held-out split's tokens, no label dropout, no smoothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from varlite.builtin import load_builtin
from varlite.core.configs import get_preset
from varlite.core.var import VAR

from ..data import images_at
from ..preset_weights import model_from_states
from ..safe_io import CheckpointError
from .checkpoint import load_checkpoint
from .classifier import class_consistency, load_classifier
from .grid import save_grid
from .loop import LoopConfig, Trainer, load_checked, state_fingerprint
from .metrics import per_scale_loss_acc, scale_logs
from .tokenizer import load_tokenizer


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
    hflip: bool = False              # also train on the tokens of left-right flipped images (2N token maps)
    encode_first: bool = False       # encode every training image (and flip) before step 0, not lazily in epoch 1
    judge: str = ""                  # a train-classifier run dir: each evaluation also measures class-consistency
    judge_per_class: int = 20        # samples per class for that measurement (guidance: sample_cfg, seed 0)
    init_from: str = ""              # start from the weights of a VAR run dir / checkpoint, or builtin:<name>


class TokenCache:
    """The token maps (N, L) int16 of a dataset under a frozen tokenizer, each computed the first time its image is
    used and kept from then on; saved to ``path`` (with the tokenizer's fingerprint) by ``save()``. With
    ``hflip=True`` it has 2N rows, row N + i holding the tokens of image i flipped left-right.

    In a data-parallel run every process encodes the new images of its share of the batch and all processes then
    exchange them, so every process holds the same cache (process 0 saves it).
    """

    def __init__(self, vqvae, dataset, path: Path | None = None, distributed=None, batch_size: int = 250,
                 hflip: bool = False):
        self.vqvae, self.dataset, self.dist, self.batch_size = vqvae, dataset, distributed, batch_size
        self.path = Path(path) if path is not None else None
        self.fingerprint = state_fingerprint(vqvae)
        self.L = sum(pn * pn for pn in vqvae.patch_nums)
        self.N = len(dataset)
        rows = 2 * self.N if hflip else self.N
        self.labels_N = dataset.labels.clone()
        saved = None
        if self.path is not None and self.path.exists():
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        if saved is not None and saved.get("tokenizer") == self.fingerprint and tuple(saved["idx_NL"].shape) == (rows, self.L):
            self.idx_NL = saved["idx_NL"]
        else:
            self.idx_NL = torch.full((rows, self.L), -1, dtype=torch.int16)    # -1: not encoded yet

    @property
    def num_encoded(self) -> int:
        return int((self.idx_NL[:, 0] >= 0).sum())

    @torch.no_grad()
    def get(self, idx_b: torch.Tensor) -> torch.Tensor:
        """Tokens (b, L) int64 of rows ``idx_b`` (row N + i: image i flipped), encoding (and keeping) those not seen
        before. Encoding always runs in float32, also inside a bf16 autocast region."""
        idx_b = idx_b.cpu()
        missing = idx_b[self.idx_NL[idx_b, 0] < 0].unique()
        device = next(self.vqvae.parameters()).device
        new = []
        with torch.autocast(device.type, enabled=False):
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start:start + self.batch_size]
                self.vqvae.eval()
                img = images_at(self.dataset, chunk % self.N, device)
                img = torch.where((chunk >= self.N).view(-1, 1, 1, 1).to(device), img.flip(-1), img)
                new.append((chunk, torch.cat(self.vqvae.img_to_idx(img), dim=1).to(torch.int16).cpu()))
        shares = self.dist.gather(new) if self.dist is not None else [new]
        for share in shares:
            for chunk, tokens in share:
                self.idx_NL[chunk] = tokens
        return self.idx_NL[idx_b].long()

    def labels(self, idx_b: torch.Tensor) -> torch.Tensor:
        """Class labels of rows ``idx_b`` (a flipped row has its image's label)."""
        return self.labels_N[idx_b.cpu() % self.N]

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

    def __init__(self, config: VarTrainConfig, distributed=None):
        super().__init__(config, distributed)
        if not config.tokenizer:
            raise ValueError("train-var needs --tokenizer <run dir of train-tokenizer (or its checkpoint.pt)>")
        self.preset = get_preset(config.preset)
        self.vqvae, _ = load_tokenizer(config.tokenizer, self.device)
        if self.vqvae.config != self.preset.vqvae:
            raise CheckpointError(f"the tokenizer in {config.tokenizer} has a different VQVAE config than preset "
                                  f"{config.preset!r} needs ({self.vqvae.config} vs {self.preset.vqvae}); train one "
                                  f"with train-tokenizer --preset {config.preset}")
        for p in self.vqvae.parameters():
            p.requires_grad_(False)
        var_config = self.preset.var
        image_size = self.preset.vqvae.image_size
        train_set = load_checked(config.dataset, "train", config.data_root, image_size, var_config.num_classes)
        val_set = load_checked(config.dataset, "test", config.data_root, image_size, var_config.num_classes)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = TokenCache(self.vqvae, train_set, self.run_dir / "tokens_train.pt", self.dist, hflip=config.hflip)
        if config.encode_first and self.tokens.num_encoded < len(self.tokens.idx_NL):
            rows = torch.arange(len(self.tokens.idx_NL))
            for start in range(0, len(rows), 5000):
                self.tokens.get(rows[start:start + 5000][self.dist.rank::self.dist.world])
            if self.dist.main:
                self.tokens.save()
        self.val_tokens = None
        if self.dist.main:
            self.val_tokens = TokenCache(self.vqvae, val_set, self.run_dir / "tokens_test.pt")
            n_val = len(val_set) if config.eval_images <= 0 else min(config.eval_images, len(val_set))
            self.val_tokens.get(torch.arange(n_val))
            self.val_tokens.save()
        self.tokenizer_fingerprint = state_fingerprint(self.vqvae)
        torch.manual_seed(config.seed)
        self.model = VAR(var_config, self.vqvae).to(self.device)
        self.model.init_weights()
        if config.init_from:
            self.init_from(config.init_from)
        self.train_module = self.wrap_ddp(self.model)
        self.optimizer = self.make_optimizer(self.model)
        self.num_items = len(train_set)
        self.judge = load_classifier(config.judge, self.device)[0] if config.judge and self.dist.main else None
        self.cpu_seconds_before = 0.0

    def init_from(self, source: str) -> None:
        """Copy the VAR weights of ``source`` (a VAR run dir / checkpoint, or builtin:<name>) into the new model;
        its configs must equal this preset's, and its tokenizer must be this run's tokenizer."""
        if source.startswith("builtin:"):
            vqvae, var = load_builtin(source.removeprefix("builtin:"))
        else:
            var, _ = load_var_run(source)
            vqvae = var.vqvae
        if var.config != self.preset.var or vqvae.config != self.preset.vqvae:
            raise CheckpointError(f"--init-from {source}: its configs differ from preset {self.config.preset!r}; "
                                  f"start from a model of the same preset")
        if state_fingerprint(vqvae) != self.tokenizer_fingerprint:
            raise CheckpointError(f"--init-from {source} was trained on a different tokenizer than "
                                  f"{self.config.tokenizer}; pass that model's tokenizer (for a built-in: "
                                  f"--tokenizer {source})")
        self.model.load_state_dict(var.state_dict())

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

    def cpu_hours(self) -> float:
        """CPU time (user + system, all threads) this run has used so far, over every resumed segment."""
        return (self.cpu_seconds_before + time.process_time()) / 3600

    def extra_state(self):
        return {"tokenizer_fingerprint": self.tokenizer_fingerprint, "cpu_seconds": 3600 * self.cpu_hours()}

    def load_extra_state(self, state):
        if state["tokenizer_fingerprint"] != self.tokenizer_fingerprint:
            raise CheckpointError(f"{self.ckpt_path} was trained on the tokens of a different tokenizer than "
                                  f"{self.config.tokenizer}; resume with the same tokenizer or use a new run dir")
        self.cpu_seconds_before = state.get("cpu_seconds", 0.0) - time.process_time()

    def compute_loss(self, idx_b, step):
        config, begin_ends = self.config, self.model.begin_ends
        if config.hflip:
            g = torch.Generator().manual_seed(config.seed * 7919 + step * 4099 + self.dist.rank)
            idx_b = idx_b + self.tokens.N * (torch.rand(len(idx_b), generator=g) < 0.5).to(idx_b.device)
        idx_bL = self.tokens.get(idx_b).to(self.device)
        labels_b = self.tokens.labels(idx_b).to(self.device)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            x_in = self.vqvae.idx_to_var_input(split_scales(idx_bL, begin_ends))
        logits_bLV = self.train_module(labels_b, x_in).float()
        loss_bL, loss_K, acc_K = per_scale_loss_acc(logits_bLV, idx_bL, begin_ends, config.label_smoothing)
        return loss_bL.mean(), scale_logs("", loss_bL.detach(), loss_K, acc_K, begin_ends)

    def evaluate(self):
        n = self.val_tokens.num_encoded
        metrics = evaluate_var(self.model, self.val_tokens.idx_NL[:n], self.val_tokens.labels_N[:n], 0, self.device)
        if self.judge is not None:
            metrics["class_consistency"] = class_consistency(self.model, self.judge, self.config.judge_per_class,
                                                             self.config.sample_cfg)["class_consistency"]
        metrics["cpu_hours"] = round(self.cpu_hours(), 4)
        return metrics

    def write_samples(self, step):
        self.model.eval()
        images = sample_grid_images(self.model, self.config.samples_per_class, self.config.sample_cfg, seed=0)
        save_grid(images, self.config.samples_per_class, self.run_dir / f"samples_{step:06d}.png")


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


def load_var_run(path, device="cpu") -> tuple[VAR, dict]:
    """The VAR of a train-var run (its folder or its checkpoint.pt), in eval mode on ``device``, with its tokenizer
    as ``var.vqvae`` (a VAR checkpoint is self-contained): returns (var, configs).

    The one reader of a train-var checkpoint (command line, evaluation, ``--init-from``, the walkthrough's runs and
    uploads), careful with a file from anyone: read safely with its tensors memory-mapped (the optimizer state is
    never read into memory), every tensor checked against the preset the file names before anything is built, then
    the model built on the meta device from the file's own tensors, every weight finite
    (``varlite.preset_weights``). Messages name the file by its path."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    ckpt = load_checkpoint(path, "var", mmap=True)
    train = ckpt["configs"].get("train")
    if not isinstance(train, dict):
        raise CheckpointError(f"{path} is damaged: it has no training config (configs['train']); delete it and "
                              f"retrain, or use an older copy")
    _, var = model_from_states({"vqvae": ckpt.get("vqvae"), "var": ckpt["model"]}, train.get("preset"),
                               path.stat().st_size, str(path), device)
    return var, ckpt["configs"]

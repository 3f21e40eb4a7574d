"""The classifiers that judge whether generated images show the class they were asked for.

Dimension key: B batch, 3 RGB, H,W image side (32), C channels, n classes.

``SmallCNN`` (``--arch small``, the Shapes judge; GroupNorm, so eval computes exactly what training did):

    conv3x3(3->32) GN ReLU, conv3x3(32->32) GN ReLU, maxpool2        -> 16x16
    conv3x3(32->64) GN ReLU, conv3x3(64->64) GN ReLU, maxpool2       -> 8x8
    conv3x3(64->128) GN ReLU, global average pool, dropout, linear(128->n)

``DeepCNN`` (``--arch deep``, the CIFAR-10 judge: ~89 % test accuracy after 10 epochs on a 2-core CPU in bf16),
a VGG-style net in the spirit of the fast CIFAR-10 training recipes (BatchNorm, GELU, max pooling):

    conv3x3(3->w) BN GELU                                              32x32
    3 blocks: conv3x3(c->c') maxpool2 BN GELU, conv3x3(c'->c') BN GELU -> 16x16 (2w), 8x8 (4w), 4x4 (4w)
    global max pool -> features (4w) -> linear(4w->n)

Class-consistency of a generator = the fraction of its samples for class c that the classifier labels c.
It is only as trustworthy as the classifier, so its own test accuracy is reported beside it. Both nets expose
``features(img)``, the vector before the last linear layer, for the Frechet distance of ``varlite.train.metrics``.

Shipped judges: a judge is evaluation, not the model, so the CIFAR-10 judge ships with varlite
(``varlite/weights/judges/cifar10.safetensors``, written by ``save_judge``) and ``load_classifier("builtin:cifar10")``
reads it; a recipe then needs no judge training, and ``train-classifier`` still retrains one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..data import images_at
from ..safe_io import CheckpointError
from .checkpoint import load_checkpoint
from .loop import LoopConfig, Trainer, load_checked


def conv_gn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(8, c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """The Shapes judge (see the module docstring). Input: float images (B, 3, H, W) in [-1, 1]."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_gn_relu(3, w), conv_gn_relu(w, w), nn.MaxPool2d(2),
            conv_gn_relu(w, 2 * w), conv_gn_relu(2 * w, 2 * w), nn.MaxPool2d(2),
            conv_gn_relu(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * w, num_classes))

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(img_B3HW))


def conv_bn_gelu(c_in: int, c_out: int, pool: bool = False) -> list[nn.Module]:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    return layers + ([nn.MaxPool2d(2)] if pool else []) + [nn.BatchNorm2d(c_out), nn.GELU()]


class DeepCNN(nn.Module):
    """The CIFAR-10 judge (see the module docstring). Input: float images (B, 3, H, W) in [-1, 1]. Runs in
    channels-last memory order (oneDNN's fast path for convolutions on a CPU)."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        w = width
        layers = conv_bn_gelu(3, w)
        for c_in, c_out in [(w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w)]:
            layers += conv_bn_gelu(c_in, c_out, pool=True) + conv_bn_gelu(c_out, c_out)
        self.features = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * w, num_classes)
        self.to(memory_format=torch.channels_last)

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(img_B3HW.contiguous(memory_format=torch.channels_last)))


ARCHS = {"small": SmallCNN, "deep": DeepCNN}


def build_classifier(arch: str, num_classes: int, width: int) -> nn.Module:
    if arch not in ARCHS:
        raise ValueError(f"unknown classifier arch {arch!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[arch](num_classes, width)


def translate(img_B3HW: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift every image by a random (dy, dx) in [-max_shift, max_shift]^2, filling the border by reflection
    (the "random crop with padding" augmentation of CIFAR training)."""
    B, _, H, W = img_B3HW.shape
    padded = F.pad(img_B3HW, (max_shift,) * 4, mode="reflect")
    shifts = torch.randint(0, 2 * max_shift + 1, (B, 2), generator=generator)
    return torch.stack([padded[b, :, dy:dy + H, dx:dx + W] for b, (dy, dx) in enumerate(shifts.tolist())])


@dataclass
class ClassifierTrainConfig(LoopConfig):
    dataset: str = "shapes"
    data_root: str | None = None
    image_size: int = 32
    num_classes: int = 10
    arch: str = "small"              # small (SmallCNN) | deep (DeepCNN)
    width: int = 32
    hflip: bool = False              # random horizontal flips (CIFAR-10 yes; Shapes no: its classes have a side)
    translate: int = 0               # random shifts of up to this many pixels (reflect-padded; 0 = off)
    label_smoothing: float = 0.0
    lr: float = 2e-3
    weight_decay: float = 5e-4
    eval_images: int = 0             # 0 = the whole test split


class ClassifierTrainer(Trainer):
    kind = "classifier"
    label = "train-classifier"
    bar_keys = ("loss", "acc")

    def __init__(self, config: ClassifierTrainConfig, distributed=None):
        super().__init__(config, distributed)
        self.train_set = load_checked(config.dataset, "train", config.data_root, config.image_size, config.num_classes)
        self.val_set = load_checked(config.dataset, "test", config.data_root, config.image_size, config.num_classes) \
            if self.dist.main else None
        torch.manual_seed(config.seed)
        self.model = build_classifier(config.arch, config.num_classes, config.width).to(self.device)
        self.train_module = self.wrap_ddp(self.model)
        self.optimizer = self.make_optimizer(self.model, betas=(0.9, 0.999))
        self.num_items = len(self.train_set)

    def compute_loss(self, idx_b, step):
        config = self.config
        g = torch.Generator().manual_seed(config.seed * 7919 + step * 4099 + self.dist.rank)
        img = images_at(self.train_set, idx_b, self.device, g if config.hflip else None)
        if config.translate:
            img = translate(img, config.translate, g)
        labels = self.train_set.labels[idx_b.cpu()].to(self.device)
        logits = self.train_module(img)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
        return loss, {"loss": loss.item(), "acc": float((logits.argmax(1) == labels).float().mean())}

    def evaluate(self):
        return {"test_acc": accuracy(self.model, self.val_set, self.config.eval_images, self.device)}


@torch.no_grad()
def accuracy(model: nn.Module, dataset, max_images: int = 0, device="cpu", batch_size: int = 500) -> float:
    """Fraction of ``dataset`` (its first ``max_images``; 0 = all) classified correctly."""
    model.eval()
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    correct = 0
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        pred = model(images_at(dataset, idx, device)).argmax(1).cpu()
        correct += int((pred == dataset.labels[idx]).sum())
    return correct / n


JUDGES_DIR = Path(__file__).resolve().parent.parent / "weights" / "judges"
JUDGE_FIELDS = ("arch", "num_classes", "width", "dataset", "test_acc")     # the metadata a shipped judge carries


def save_judge(path, model: nn.Module, config: dict, test_acc: float) -> Path:
    """Write a trained classifier as a shipped judge: its weights (float32) in a safetensors file whose metadata
    holds its architecture, dataset and test accuracy. ``config`` is its train-classifier config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**{k: str(config[k]) for k in JUDGE_FIELDS[:4]}, "test_acc": f"{test_acc:.4f}"}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp), meta)
    tmp.replace(path)
    return path


def load_judge(name: str, device="cpu") -> tuple[nn.Module, dict]:
    """The shipped judge ``name`` (``varlite/weights/judges/<name>.safetensors``) in eval mode, and its metadata
    (arch, num_classes, width, dataset, test_acc) as the config."""
    path = JUDGES_DIR / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in JUDGES_DIR.glob("*.safetensors"))
        raise CheckpointError(f"no shipped judge named {name!r}; shipped: {', '.join(shipped) or 'none'} (or give "
                              f"a train-classifier run folder)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"the shipped judge {path} is damaged ({err}); reinstall varlite") from err
    if any(k not in meta for k in JUDGE_FIELDS):
        raise CheckpointError(f"the shipped judge {path} lacks its metadata; reinstall varlite")
    config = {"arch": meta["arch"], "num_classes": int(meta["num_classes"]), "width": int(meta["width"]),
              "dataset": meta["dataset"], "test_acc": float(meta["test_acc"])}
    model = build_classifier(config["arch"], config["num_classes"], config["width"])
    model.load_state_dict(state)
    return model.to(device).eval(), config


def load_classifier(path, device="cpu") -> tuple[nn.Module, dict]:
    """The classifier of a checkpoint (file or run dir) or a shipped judge (``builtin:<dataset>``) in eval mode,
    and its training config."""
    if str(path).startswith("builtin:"):
        return load_judge(str(path).removeprefix("builtin:"), device)
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    ckpt = load_checkpoint(path, "classifier")
    config = ckpt["configs"]["train"]
    arch = config.get("arch", "small")             # runs from before --arch were all SmallCNN
    model = build_classifier(arch, config["num_classes"], config["width"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit a {type(model).__name__}({config['num_classes']}, "
                              f"{config['width']}) ({str(err)[:300]})") from err
    return model.to(device).eval(), config


@torch.no_grad()
def samples_per_class(var, per_class: int, cfg: float = 1.5, seed: int = 0, top_k: int = 0, top_p: float = 0.0,
                      batch_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` samples of every class, class by class: (images (N, 3, H, W) in [0, 1], labels (N,)).
    Generated ``batch_classes`` classes per call; call i uses seed ``seed + i``."""
    labels = torch.arange(var.num_classes).repeat_interleave(per_class)
    chunk = batch_classes * per_class
    images = [var.generate(labels[start:start + chunk], cfg=cfg, top_k=top_k, top_p=top_p, seed=seed + i).cpu()
              for i, start in enumerate(range(0, len(labels), chunk))]
    return torch.cat(images), labels


@torch.no_grad()
def consistency_of(classifier: nn.Module, img01_N3HW: torch.Tensor, labels_N: torch.Tensor, num_classes: int,
                   batch_size: int = 500) -> dict:
    """The fraction of images the classifier labels as asked, overall and per class (``consistency_c<k>``)."""
    classifier.eval()
    device = next(classifier.parameters()).device
    pred = torch.cat([classifier(img01_N3HW[i:i + batch_size].to(device).mul(2).sub(1)).argmax(1).cpu()
                      for i in range(0, len(img01_N3HW), batch_size)])
    hit_N = (pred == labels_N).float()
    out = {"class_consistency": float(hit_N.mean()), "samples": len(labels_N)}
    out.update({f"consistency_c{c}": float(hit_N[labels_N == c].mean()) for c in range(num_classes)})
    return out


def class_consistency(var, classifier: nn.Module, per_class: int = 10, cfg: float = 1.5, seed: int = 0,
                      top_k: int = 0, top_p: float = 0.0, batch_classes: int = 10) -> dict:
    """Generate ``per_class`` samples of every class and classify them: the overall fraction labelled as asked,
    and that fraction per class (``consistency_c<k>``)."""
    img01, labels = samples_per_class(var, per_class, cfg, seed, top_k, top_p, batch_classes)
    return {**consistency_of(classifier, img01, labels, var.num_classes), "cfg": cfg}


@torch.no_grad()
def features_of(classifier: nn.Module, img_N3HW: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The classifier's feature vectors (before its last linear layer) of images in [-1, 1]: (N, D)."""
    classifier.eval()
    device = next(classifier.parameters()).device
    return torch.cat([classifier.features(img_N3HW[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(img_N3HW), batch_size)])


def add_export_judge_options(parser) -> None:
    parser.add_argument("--classifier", required=True, help="the train-classifier run folder (or its checkpoint.pt)")
    parser.add_argument("--dataset", default="cifar10", help="the dataset it judges (its test split measures it)")
    parser.add_argument("--data-root", default=None, help="where that dataset is (as for train-classifier)")
    parser.add_argument("--out", default=None,
                        help="the file to write (default: varlite/weights/judges/<dataset>.safetensors, the judge "
                             "that --classifier builtin:<dataset> loads)")


def cmd_export_judge(args) -> int:
    """Ship a trained classifier as a judge: measure its accuracy on the whole test split, then write its weights
    and that accuracy (``save_judge``)."""
    model, config = load_classifier(args.classifier)
    if config.get("dataset") != args.dataset:
        raise ValueError(f"{args.classifier} was trained on {config.get('dataset')!r}, not {args.dataset!r}; pass "
                         f"--dataset {config.get('dataset')}")
    test_set = load_checked(args.dataset, "test", args.data_root, config["image_size"], config["num_classes"])
    test_acc = accuracy(model, test_set)
    out = save_judge(args.out or JUDGES_DIR / f"{args.dataset}.safetensors", model, config, test_acc)
    print(f"wrote {out}: {config['arch']} judge of {args.dataset}, test accuracy {100 * test_acc:.2f} % "
          f"({len(test_set)} images)")
    return 0

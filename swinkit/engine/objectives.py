"""What the loop trains: classification (supervised training, fine-tuning, linear probing), semantic segmentation,
detection and instance segmentation, and self-supervised pretraining (MoBY, SimMIM). Each owns its loss on a
micro-batch and what it measures at the end of an epoch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from ..ssl import momentum_at
from . import detection_report
from .coco_eval import evaluate_detection
from .config import Config
from .evaluate import evaluate
from .knn import knn_accuracy
from .miou import IGNORE_INDEX
from .parallel import to_device
from .segmentation_eval import evaluate_segmentation
from .segmentation_report import write_run_report
from .setup import Session, autocast


def build_criterion(cfg: Config, mixup_on: bool) -> nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_on:
        return SoftTargetCrossEntropy()  # label smoothing is folded into the mixed targets
    if cfg.data.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(cfg.data.label_smoothing)
    return nn.CrossEntropyLoss()


def build_mixup(cfg: Config, num_classes: int):
    from timm.data import Mixup

    d = cfg.data
    if d.mixup <= 0 and d.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=d.mixup, cutmix_alpha=d.cutmix, prob=d.mixup_prob, switch_prob=d.switch_prob, mode=d.mixup_mode,
        label_smoothing=d.label_smoothing, num_classes=num_classes,
    )  # fmt: skip


def mix(mixup, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's ``Mixup`` on a batch of any size: it pairs sample i with sample B-1-i and needs an even B, so an odd
    batch is mixed with its first sample appended, which is then dropped (a batch of one mixes with itself)."""
    n = len(images)
    if n % 2 == 0:
        return mixup(images, targets)
    images, targets = mixup(torch.cat([images, images[:1]]), torch.cat([targets, targets[:1]]))
    return images[:n], targets[:n]


class Classification:
    """Cross-entropy of a classifier (with mixup/cutmix and label smoothing), top-1/top-5 on the validation set."""

    metric = "val_top1"
    full_batches = False

    def __init__(self, cfg: Config, s: Session, model: nn.Module, train_loader, val_loader, num_classes: int,
                 classes: list[str]) -> None:  # fmt: skip
        self.cfg, self.session = cfg, s
        self.model, self.train_loader, self.val_loader = model, train_loader, val_loader
        self.classes = list(classes)
        self.mixup = build_mixup(cfg, num_classes)
        self.mixup_on = self.mixup is not None
        self.criterion = build_criterion(cfg, self.mixup_on)

    def train_epoch(self, epoch: int) -> None:
        """Mixup stops at ``data.mixup_off_epoch``; a linear probe's frozen backbone runs in eval mode (no drop path)
        unless ``train.linear_probe_drop_path`` keeps the official MoBY train mode."""
        off = 0 < self.cfg.data.mixup_off_epoch <= epoch
        self.mixup_on = self.mixup is not None and not off
        self.criterion = build_criterion(self.cfg, self.mixup_on)
        if self.cfg.train.linear_probe and not self.cfg.train.linear_probe_drop_path:
            for name, child in self.model.named_children():
                if name != "head":
                    child.eval()

    def loss(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        device, precision = self.session.device, self.session.precision
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if self.mixup_on:
            images, targets = mix(self.mixup, images, targets)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = net(images)
        return self.criterion(logits.float(), targets)  # outside autocast, as the official recipe

    def initial_metrics(self) -> dict:
        return {}

    def epoch_metrics(self, epoch: int, step: int, last_epoch: bool, ema: nn.Module | None) -> dict:
        if not ((epoch + 1) % self.cfg.train.eval_every == 0 or last_epoch):
            return {}
        device, precision = self.session.device, self.session.precision
        val = evaluate(self.model, self.val_loader, device, precision)
        record = {"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"]}
        if ema is not None:
            val_ema = evaluate(ema, self.val_loader, device, precision)
            record.update({f"ema_val_{k}": val_ema[k] for k in ("top1", "top5", "loss")})
        return record

    def summary(self, record: dict) -> str:
        line = ""
        if "val_top1" in record:
            line += f"  val top-1 {record['val_top1']:.2f} top-5 {record['val_top5']:.2f}"
        if "ema_val_top1" in record:
            line += f"  EMA top-1 {record['ema_val_top1']:.2f}"
        return line

    def write_reports(self, run_dir: Path, record: dict) -> None:
        """Nothing beyond the record: top-1/top-5 say it all."""


class Segmentation:
    """Per-pixel cross-entropy of a segmentation model and its auxiliary head (weighed ``head.auxiliary_weight``),
    mmseg's mIoU on the validation set.

    The loss is mmseg's: averaged over every pixel of the batch, the ignored ones (255) counting as zeros (mmseg's
    ``avg_non_ignore=False``, the Swin recipes'), each head's logits at the input's size, each pixel's term weighed
    by its class's ``seg.class_weight`` when given (mmseg's ``class_weight``).
    """

    metric = "val_miou"
    full_batches = False

    def __init__(self, cfg: Config, s: Session, model: nn.Module, train_loader, val_loader,
                 classes: list[str]) -> None:  # fmt: skip
        self.cfg, self.session = cfg, s
        self.model, self.train_loader, self.val_loader = model, train_loader, val_loader
        self.classes = list(classes)
        weights = cfg.seg.class_weight
        if weights is not None and len(weights) != len(self.classes):
            raise ConfigError(f"seg.class_weight has {len(weights)} weights for {len(self.classes)} classes; give one "
                              "per class")  # fmt: skip
        self.class_weight = None if weights is None else torch.tensor(weights, device=s.device)
        self.latest: dict | None = None  # the latest evaluation, whole (per class, confusion matrix)

    def train_epoch(self, epoch: int) -> None:
        pass

    def loss(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        device = self.session.device
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, self.session.precision):
            outputs = net(images)
        return segmentation_loss(outputs, targets, self.cfg.head.auxiliary_weight, self.class_weight)

    def initial_metrics(self) -> dict:
        return {}

    def evaluate(self, model: nn.Module) -> dict:
        s = self.session
        return evaluate_segmentation(model, self.val_loader, s.device, s.precision, len(self.classes), self.cfg.seg,
                                     self.classes)  # fmt: skip

    def epoch_metrics(self, epoch: int, step: int, last_epoch: bool, ema: nn.Module | None) -> dict:
        if not ((epoch + 1) % self.cfg.train.eval_every == 0 or last_epoch):
            return {}
        val = self.latest = self.evaluate(self.model)
        record = {"val_miou": val["mIoU"], "val_macc": val["mAcc"], "val_aacc": val["aAcc"]}
        if ema is not None:
            val_ema = self.evaluate(ema)
            record.update({"ema_val_miou": val_ema["mIoU"], "ema_val_macc": val_ema["mAcc"],
                           "ema_val_aacc": val_ema["aAcc"]})  # fmt: skip
        return record

    def summary(self, record: dict) -> str:
        line = ""
        if "val_miou" in record:
            line += f"  val mIoU {record['val_miou']:.2f} mAcc {record['val_macc']:.2f} aAcc {record['val_aacc']:.2f}"
        if "ema_val_miou" in record:
            line += f"  EMA mIoU {record['ema_val_miou']:.2f}"
        return line

    def write_reports(self, run_dir: Path, record: dict) -> None:
        """The per-class table and confusion matrix of the evaluation ``record`` comes from (main process)."""
        if "val_miou" in record:
            write_run_report(run_dir, self.latest, record["epoch"], record["step"])


def segmentation_loss(outputs: Sequence[torch.Tensor], targets: torch.Tensor, auxiliary_weight: float,
                      class_weight: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The main head's loss plus ``auxiliary_weight`` times the auxiliary heads' (mmseg's ``loss_weight``)."""
    losses = [pixel_cross_entropy(logits.float(), targets, class_weight) for logits in outputs]
    return losses[0] + auxiliary_weight * sum(losses[1:])


def pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """mmseg's ``CrossEntropyLoss`` of (B, K, H, W) logits: the mean over all B * H * W pixels of each pixel's term
    (times its class's ``weight``), 0 at ignored ones."""
    return F.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE_INDEX, reduction="none").mean()


MODEL_TARGET_KEYS = ("boxes", "labels", "masks")


def batch_seed(seeds: Sequence[int]) -> int:
    """One RNG seed of a batch's sample seeds (order-sensitive, below 2**63)."""
    value = 0
    for seed in seeds:
        value = (value * 1_000_003 + int(seed) + 1) % (2**61 - 1)
    return value


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Every RNG of the CPU and of ``device`` seeded with ``seed`` inside, given back its state afterwards."""
    devices_ = [] if device.type == "cpu" else [device.index or 0]
    kind = device.type if device.type != "cpu" else "cuda"
    with torch.random.fork_rng(devices=devices_, device_type=kind):
        torch.manual_seed(seed)
        yield


def detection_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """torchvision's loss dict (RPN objectness and box regression, RoI classification and box regression, masks),
    summed in fp32 with weight 1 each, as mmdet's Mask R-CNN configs weigh them."""
    return sum(loss.float() for loss in losses.values())


class Detection:
    """A Faster or Mask R-CNN's summed losses (``detection_loss``) on a batch, COCO box (and mask) AP of the
    validation set (``swinkit.engine.coco_eval``).

    A micro-batch's forward draws its anchor and proposal samples (torchvision's balanced samplers) and the
    backbone's drop path from RNGs seeded by its samples' seeds (``batch_seed``): what a step draws depends on the
    images it trains on, not on the process or the point a resumed run restarts at. So a process of batch 1 with 2
    accumulation steps draws what 2 processes of batch 1 draw, and every process of a resumed run continues exactly.
    """

    metric = "val_box_ap"
    full_batches = False

    def __init__(self, cfg: Config, s: Session, model: nn.Module, train_loader, val_loader, classes: list[str],
                 category_ids: list[int]) -> None:  # fmt: skip
        self.cfg, self.session = cfg, s
        self.model, self.train_loader, self.val_loader = model, train_loader, val_loader
        self.classes, self.category_ids = list(classes), list(category_ids)
        self.latest: dict | None = None

    def train_epoch(self, epoch: int) -> None:
        pass

    def loss(self, net: nn.Module, images: list[torch.Tensor], targets: list[dict], step: int) -> torch.Tensor:
        device = self.session.device
        seed = batch_seed([t["seed"] for t in targets])
        images = to_device(images, device)
        targets = [to_device({k: t[k] for k in MODEL_TARGET_KEYS if k in t}, device) for t in targets]
        with seeded(seed, device), autocast(device, self.session.precision):
            losses = net(images, targets)
        return detection_loss(losses)

    def initial_metrics(self) -> dict:
        return {}

    def evaluate(self, model: nn.Module) -> dict:
        s = self.session
        return evaluate_detection(model, self.val_loader, s.device, s.precision, self.classes, self.category_ids)

    def epoch_metrics(self, epoch: int, step: int, last_epoch: bool, ema: nn.Module | None) -> dict:
        if not ((epoch + 1) % self.cfg.train.eval_every == 0 or last_epoch):
            return {}
        val = self.latest = self.evaluate(self.model)
        record = detection_report.record(val, "val_")
        if ema is not None:
            record.update(detection_report.record(self.evaluate(ema), "ema_val_"))
        return record

    def summary(self, record: dict) -> str:
        line = ""
        if "val_box_ap" in record:
            line += f"  val box AP {record['val_box_ap']:.2f}"
            if "val_mask_ap" in record:
                line += f" mask AP {record['val_mask_ap']:.2f}"
        if "ema_val_box_ap" in record:
            line += f"  EMA box AP {record['ema_val_box_ap']:.2f}"
        return line

    def write_reports(self, run_dir: Path, record: dict) -> None:
        """COCOeval's tables and the per-class AP of the evaluation ``record`` comes from (main process)."""
        if "val_box_ap" in record:
            detection_report.write_run_report(run_dir, self.latest, record["epoch"], record["step"])


class SelfSupervised:
    """A MoBY or SimMIM meta-architecture, which returns its own loss; the kNN top-1 of its encoder as the monitor.

    MoBY gets two views per image and the target momentum of the step (``momentum_at``); its gathered keys must be
    equally many on every process, so a batch short of unreadable images is skipped everywhere.
    """

    metric = "knn_top1"
    classes = None

    def __init__(self, cfg: Config, s: Session, model: nn.Module, train_loader, bank_loader, val_loader,
                 total_steps: int) -> None:  # fmt: skip
        self.cfg, self.session = cfg, s
        self.model, self.train_loader = model, train_loader
        self.bank_loader, self.val_loader = bank_loader, val_loader
        self.total_steps = total_steps
        self.moby = cfg.ssl.method == "moby"
        self.full_batches = self.moby

    def train_epoch(self, epoch: int) -> None:
        pass

    def loss(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        device = self.session.device
        images = images.to(device, non_blocking=True)
        views = images.unbind(1) if self.moby else (images,)
        if self.cfg.train.channels_last:
            views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
        with autocast(device, self.session.precision):
            if self.moby:
                return net(*views, momentum=momentum_at(step, self.total_steps, self.cfg.ssl.momentum))
            return net(*views)

    def knn(self) -> float:
        s = self.session
        return knn_accuracy(self.model.feature_module(), self.bank_loader, self.val_loader, s.device, s.precision,
                            self.cfg.ssl.knn_k, self.cfg.ssl.knn_temperature)  # fmt: skip

    def initial_metrics(self) -> dict:
        """The encoder at initialisation: the baseline the kNN curve is read against."""
        return {"knn_top1": self.knn()} if self.cfg.ssl.knn_every else {}

    def epoch_metrics(self, epoch: int, step: int, last_epoch: bool, ema: nn.Module | None) -> dict:
        record = {}
        if self.moby:
            record["momentum"] = momentum_at(step, self.total_steps, self.cfg.ssl.momentum)
        every = self.cfg.ssl.knn_every
        if every and ((epoch + 1) % every == 0 or last_epoch):
            record["knn_top1"] = self.knn()
        return record

    def summary(self, record: dict) -> str:
        return f"  kNN top-1 {record['knn_top1']:.2f}" if "knn_top1" in record else ""

    def write_reports(self, run_dir: Path, record: dict) -> None:
        """Nothing beyond the record: the kNN top-1 says it all."""

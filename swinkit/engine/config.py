"""The training configuration: dataclasses are the schema, recipes are YAML, overrides are dotted ``key=value``.

A recipe is either a name from ``swinkit/configs/`` (``list_configs()``) or a path to a YAML file. Two YAML layouts
are accepted:

* swinkit's own, nested by concern: ``model``, ``data``, ``optim``, ``sched``, ``train``, ``ssl`` (plus a top-level
  ``name``);
* the seed systems' flat MindSpore-style files (``arch: ...``, ``base_lr: ...``), translated by the one table
  ``FLAT_KEYS``; keys without a meaning here (``IGNORED_FLAT_KEYS``) are named in a single warning line.

Unknown keys and values of the wrong type raise ``ConfigError`` naming the key and its closest valid names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import math
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.atomic import write_atomic
from ..core.errors import ConfigError, shown

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = "quickstart"


@dataclass
class ModelConfig:
    """Which network to build. ``None`` keeps the registered model's default for that argument."""

    name: str = "swinv2_tiny_window8_256"
    num_classes: int | None = None
    img_size: int | None = None
    window_size: int | None = None
    pretrained_window_sizes: list[int] | None = None
    drop_path_rate: float | None = None
    drop_rate: float | None = None
    patch_size: int | None = None
    in_chans: int | None = None
    embed_dim: int | None = None
    depths: list[int] | None = None
    num_heads: list[int] | None = None
    mlp_ratio: float | None = None
    split_size: list[int] | None = None  # CSWin stripe widths per stage
    pretrained: str | None = None  # fine-tune from: a file, an http(s)/s3:// (fsspec) URL, a tag (in22k) or MODEL.TAG
    pretrained_format: str = "auto"
    label_map: str | None = None  # 22k->1k index file (one 22k index per line) for the pretrained head
    head: str = "match"  # "match": the head must fit; "reset": keep the fresh head when the class counts differ
    allow_unused_classes: bool = False  # a num_classes above the data's class count is deliberate (else refused)
    grad_checkpointing: bool = False
    attention_chunks: int = 1  # window attention N groups of windows at a time (sequential self-attention)
    backbone: str | None = None  # a segmentation model's backbone (a classifier); the width keys above apply to it
    window_padding: str | None = None  # masked | visible (a segmentation model's default: the official dense rule)


@dataclass
class DataConfig:
    """Datasets, augmentation and loading. ``batch_size`` is per process; the global batch is it times the world."""

    # "folder": ImageNet layout under ``root``; "wds": shards (``swinkit shard``); "hf": a Hugging Face image dataset;
    # "digits": scikit-learn's, built in; "auto": shards, HF or folder by what ``root`` holds (see swinkit.data.build)
    dataset: str = "folder"
    root: str | None = None  # a directory, or a URL (s3://, gs://, hf://, ...) for shards and HF datasets
    train_split: str = "train"  # a folder's subdirectory, a split of the shard index or a brace pattern of shards
    val_split: str = "val"
    batch_size: int = 128
    eval_batch_size: int | None = None
    workers: int = 4
    shuffle: bool = True  # training order; false reads the training set in order (folder order = shard order)
    shuffle_buffer: int = 2000  # shards: samples each loader worker shuffles among (raw bytes, before decoding)
    max_train_samples: int | None = None  # keep the first n of the (fixed) training list: for tests and smoke runs
    max_val_samples: int | None = None
    interpolation: str = "bicubic"
    crop_pct: float | None = None  # evaluation resize/crop ratio; None uses the model's
    mean: list[float] | None = None
    std: list[float] | None = None
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    hflip: float = 0.5
    color_jitter: float | None = 0.4
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    re_prob: float = 0.25
    re_mode: str = "pixel"
    re_count: int = 1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    switch_prob: float = 0.5
    mixup_mode: str = "batch"
    mixup_off_epoch: int = 0  # turn mixup/cutmix off from this epoch on (0 = never)
    label_smoothing: float = 0.1
    max_bad_fraction: float = 0.01  # stop when more than this fraction of the training images is unreadable


@dataclass
class OptimConfig:
    """AdamW (or SGD) with parameter groups; ``lr`` is per ``lr_base_batch`` images (official linear scaling)."""

    name: str = "adamw"
    lr: float = 5e-4
    lr_base_batch: int | None = 512  # lr * global_batch * accum_steps / lr_base_batch; None uses lr as given
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9  # SGD only
    layer_decay: float | None = None  # layer-wise lr decay for fine-tuning (e.g. 0.9)
    backbone_lr_scale: float = 1.0  # lr multiplier of everything but the head (CSWin's --lr-scale)
    clip_grad: float | None = 5.0  # global-norm clipping; None turns it off
    accum_steps: int = 1


@dataclass
class SchedConfig:
    """Per-iteration learning-rate schedule over ``epochs`` in total.

    ``cosine``: linear warmup from ``warmup_lr`` for ``warmup_epochs``, cosine from ``lr`` to ``min_lr``, then
    ``cooldown_epochs`` at ``min_lr`` and the CSWin phases ``cool``, ``tail``, ``over`` at their own constant rates.
    All phases fit inside ``epochs``: the cosine lasts what the other phases leave. ``constant`` keeps ``lr`` after
    the warmup. Every rate is scaled like ``optim.lr``.
    """

    name: str = "cosine"
    epochs: int = 300
    warmup_epochs: float = 20
    warmup_lr: float = 5e-7
    min_lr: float = 5e-6
    cooldown_epochs: float = 0
    cool_epochs: float = 0
    cool_lr: float = 1e-5
    tail_epochs: float = 0
    tail_lr: float = 1e-6
    over_epochs: float = 0
    over_lr: float = 1e-7
    # Counted in iterations (optimizer steps) instead, as mmseg's recipes: ``iterations`` in all, of which
    # ``warmup_iterations``; the run's epochs are then ``train.iterations_per_epoch`` iterations each.
    # ``warmup_iterations`` also sets the warmup of an epoch schedule in steps (mmdet's 500 iterations).
    iterations: int | None = None
    warmup_iterations: int | None = None
    warmup_ratio: float = 1e-6  # poly: the warmup starts at this fraction of the scheduled rate (mmcv's 'linear')
    power: float = 1.0  # poly: (1 - step / steps) ** power from lr down to min_lr
    # step (mmdet's detection schedules): lr times gamma at each milestone epoch, after a warmup of
    # ``warmup_iterations`` that rises linearly from ``warmup_ratio`` of lr (mmcv's 'linear' warmup)
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1


@dataclass
class StageConfig:
    """One step of a progressive-resolution plan: train ``epochs`` at ``img_size`` (and ``window_size``)."""

    epochs: int = 1
    img_size: int = 224
    window_size: int | None = None


@dataclass
class TrainConfig:
    """The run: where it writes, precision, EMA, checkpoints and the progressive plan."""

    output: str | None = None  # run directory; None: runs/<config name>
    seed: int = 0
    device: str = "auto"  # "auto": the accelerator (cuda, xpu, mps, npu, ...) if there is one, else cpu
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto (bf16 on an accelerator, fp32 on CPU)
    ema: bool = False
    ema_decay: float = 0.9998
    ema_warmup: bool = False
    freeze: list[str] = field(default_factory=list)  # module-name prefixes to freeze, e.g. [patch_embed, layers.0]
    linear_probe: bool = False  # train the classifier (head.fc) only; the frozen backbone runs in eval mode
    linear_probe_drop_path: bool = False  # official MoBY quirk: keep the frozen backbone in train mode (drop path on)
    stages: list[StageConfig] = field(default_factory=list)
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    iterations_per_epoch: int | None = None  # an epoch of this many iterations over a repeated training set
    save_every_steps: int = 0  # also write last/ every n optimizer steps (0: at the end of each epoch only)
    stop_after_steps: int | None = None  # stop (after saving last/) once this many optimizer steps are done
    max_nonfinite: int = 3  # consecutive non-finite losses (fp32/bf16) before the run stops
    log_every: int = 10
    tensorboard: bool = False
    channels_last: bool = False
    compile: bool = False  # torch.compile the model's parts (one graph each, no graph breaks) for training and eval
    deterministic: bool = False
    parallel: str = "ddp"  # ddp: a full copy per process | fsdp: parameters, gradients, optimizer state sharded (FSDP2)
    fsdp_reshard_after_forward: bool = True  # free gathered parameters after each forward (ZeRO-3); False: ZeRO-2
    threads: int | None = None  # torch CPU threads per process; None keeps torch's default


@dataclass
class SSLConfig:
    """Self-supervised pretraining (``swinkit pretrain``); ``swinkit train`` ignores it.

    MoBY's online encoder uses ``model.drop_path_rate``, its target ``target_drop_path_rate``. The two views'
    augmentations are BYOL's: random-resized crop (``data.scale``, ``data.ratio``), flip (``data.hflip``), colour
    jitter (``data.color_jitter`` s -> (s, s, s/2, s/4)) with ``color_jitter_prob``, grayscale, then Gaussian blur and
    solarize with a probability per view.
    """

    method: str = "moby"  # moby | simmim
    # MoBY (Transformer-SSL)
    momentum: float = 0.99  # target momentum at step 0; rises to 1 on a cosine over all steps
    temperature: float = 0.2
    queue_size: int = 4096  # keys per queue; a multiple of the global batch
    proj_dim: int = 256
    hidden_dim: int = 4096
    proj_layers: int = 2
    pred_layers: int = 2
    target_drop_path_rate: float = 0.0
    color_jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: list[float] = field(default_factory=lambda: [1.0, 0.1])  # view 1, view 2
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])  # in pixels of the model input
    solarize_prob: list[float] = field(default_factory=lambda: [0.0, 0.2])
    # SimMIM
    mask_ratio: float = 0.6
    mask_patch_size: int = 32  # pixels; a multiple of the model's patch size that divides the input size
    norm_target_window: int | None = None  # Swin V2 recipe: normalise targets by the local 47x47 mean/std
    # k-nearest-neighbour monitor of the frozen encoder on the validation split
    knn_k: int = 20
    knn_temperature: float = 0.07
    knn_every: int = 1  # epochs between kNN evaluations (0: never; the last epoch is always evaluated)


@dataclass
class HeadConfig:
    """A dense model's heads: UperNet's decode and auxiliary heads, or a detector's FPN, anchors and RoI heads
    (the models' arguments; None keeps the model's)."""

    channels: int | None = None
    pool_scales: list[int] | None = None
    dropout: float | None = None
    auxiliary: bool | None = None
    auxiliary_channels: int | None = None
    auxiliary_index: int | None = None
    auxiliary_weight: float = 0.4  # the auxiliary head's loss weight (the decode head's is 1)
    fpn_channels: int | None = None  # detection (FasterRCNN / MaskRCNN)
    anchor_sizes: list[int] | None = None  # one per level P2-P6
    representation_size: int | None = None
    mask_channels: int | None = None
    rpn_batch_size_per_image: int | None = None
    box_batch_size_per_image: int | None = None


@dataclass
class SegConfig:
    """Semantic segmentation: mmseg's pipeline (``swinkit.data.segmentation``) and inference, the built-in scenes.

    ``scale`` is (long side, short side) the image is rescaled to fit, by a ratio in ``ratio_range`` for training
    (None: kept); ``crop_size`` the training crop (H, W). Evaluation runs the whole rescaled image (``inference:
    whole``) or ``slide_crop`` windows every ``slide_stride`` pixels (``slide``), at each ratio of ``tta_ratios``
    (empty: the scale alone) and also flipped with ``tta_flip``; the scores are mmseg's (``swinkit.engine.miou``).
    """

    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    scale: list[int] | None = field(default_factory=lambda: [2048, 512])
    ratio_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    cat_max_ratio: float = 0.75
    photometric: bool = True
    reduce_zero_label: bool = False  # ADE20K: label 0 ("other") is ignored and the rest shift down by one
    class_weight: list[float] | None = None  # per-class loss weights (mmseg's CrossEntropyLoss class_weight)
    inference: str = "whole"
    slide_crop: list[int] = field(default_factory=lambda: [512, 512])
    slide_stride: list[int] = field(default_factory=lambda: [341, 341])
    tta_ratios: list[float] = field(default_factory=list)
    tta_flip: bool = False
    scene_size: int = 64  # data.dataset=digit_scenes: scene side, training and validation scene counts
    scenes: int = 1000
    val_scenes: int = 200


@dataclass
class DetConfig:
    """Detection and instance segmentation: the training pipeline (``swinkit.data.detection``), the test scale and
    which images train. ``data.dataset=coco`` reads ``data.root/annotations/instances_<split>.json`` beside
    ``data.root/<split>/``, ``wds`` shards of it, ``hf`` a Hugging Face dataset of images and objects;
    ``digit_scenes`` generates ``seg.scenes`` / ``seg.val_scenes`` scenes of
    ``seg.scene_size`` px (the segmentation scenes, with instances)."""

    shorter_sides: list[int] = field(default_factory=lambda: list(range(480, 801, 32)))
    max_size: int = 1333  # the training resize's longer-side limit
    crop_policy: bool = True  # the official Swin configs' 50% resize-crop-resize policy
    crop_shorter_sides: list[int] = field(default_factory=lambda: [400, 500, 600])
    crop_size: list[int] = field(default_factory=lambda: [384, 600])  # (low, high) of each side of the crop
    lsj: bool = False  # large-scale jitter instead of the multi-scale pipeline
    lsj_size: int = 1024
    lsj_range: list[float] = field(default_factory=lambda: [0.1, 2.0])
    test_scale: list[int] = field(default_factory=lambda: [1333, 800])  # (longer-side limit, shorter side)
    filter_empty: bool = True  # leave training images without a trainable annotation out (mmdet's filter_empty_gt)
    hf_box_format: str = "xywh"  # data.dataset=hf: objects.bbox as COCO's (x, y, width, height) or (x0, y0, x1, y1)


@dataclass
class Config:
    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    det: DetConfig = field(default_factory=DetConfig)


CHOICES = {
    "model.head": ("match", "reset"),
    "model.window_padding": ("masked", "visible"),
    "data.dataset": ("folder", "wds", "hf", "digits", "auto", "segmentation", "digit_scenes",
                     "coco"),
    "data.mixup_mode": ("batch", "pair", "elem"),
    "data.re_mode": ("const", "rand", "pixel"),
    "data.interpolation": ("bilinear", "bicubic", "nearest", "random"),
    "optim.name": ("adamw", "sgd"),
    "sched.name": ("cosine", "constant", "poly", "step"),
    "seg.inference": ("whole", "slide"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.parallel": ("ddp", "fsdp"),
    "ssl.method": ("moby", "simmim"),
    "det.hf_box_format": ("xywh", "xyxy"),
}
# The interval each numeric key's values must lie in (inf: unbounded); stage keys are named without their index.
RANGES = {
    "model.window_size": "[1, inf)", "model.img_size": "[1, inf)", "model.patch_size": "[1, inf)",
    "model.embed_dim": "[1, inf)", "model.num_classes": "[1, inf)", "model.attention_chunks": "[1, inf)",
    "model.num_heads": "[1, inf)", "model.depths": "[1, inf)", "model.mlp_ratio": "(0, inf)",
    "model.in_chans": "[1, inf)", "model.drop_path_rate": "[0, 1)", "model.drop_rate": "[0, 1)",
    "model.split_size": "[1, inf)", "model.pretrained_window_sizes": "[0, inf)",
    "data.batch_size": "[1, inf)", "data.eval_batch_size": "[1, inf)", "data.workers": "[0, inf)",
    "data.shuffle_buffer": "[1, inf)", "data.max_train_samples": "[1, inf)", "data.max_val_samples": "[1, inf)",
    "data.crop_pct": "(0, 1]", "data.mean": "(-inf, inf)", "data.std": "(0, inf)", "data.scale": "(0, 1]",
    "data.ratio": "(0, inf)", "data.hflip": "[0, 1]", "data.color_jitter": "[0, inf)", "data.re_prob": "[0, 1]",
    "data.re_count": "[1, inf)", "data.mixup": "[0, inf)", "data.cutmix": "[0, inf)", "data.mixup_prob": "[0, 1]",
    "data.switch_prob": "[0, 1]", "data.mixup_off_epoch": "[0, inf)", "data.label_smoothing": "[0, 1)",
    "data.max_bad_fraction": "[0, 1]",
    "optim.lr": "[0, inf)", "optim.lr_base_batch": "[1, inf)", "optim.weight_decay": "[0, inf)",
    "optim.betas": "[0, 1)", "optim.eps": "[0, inf)", "optim.momentum": "[0, 1]", "optim.layer_decay": "(0, 1]",
    "optim.backbone_lr_scale": "[0, inf)", "optim.clip_grad": "[0, inf)", "optim.accum_steps": "[1, inf)",
    "sched.epochs": "[1, inf)", "sched.warmup_epochs": "[0, inf)", "sched.warmup_lr": "[0, inf)",
    "sched.min_lr": "[0, inf)", "sched.cooldown_epochs": "[0, inf)", "sched.cool_epochs": "[0, inf)",
    "sched.cool_lr": "[0, inf)", "sched.tail_epochs": "[0, inf)", "sched.tail_lr": "[0, inf)",
    "sched.over_epochs": "[0, inf)", "sched.over_lr": "[0, inf)", "sched.iterations": "[1, inf)",
    "sched.warmup_iterations": "[0, inf)", "sched.warmup_ratio": "(0, 1]", "sched.power": "(0, inf)",
    "train.iterations_per_epoch": "[1, inf)", "sched.milestones": "[1, inf)", "sched.gamma": "(0, 1]",
    "head.fpn_channels": "[1, inf)", "head.anchor_sizes": "[1, inf)", "head.representation_size": "[1, inf)",
    "head.mask_channels": "[1, inf)", "head.rpn_batch_size_per_image": "[1, inf)",
    "head.box_batch_size_per_image": "[1, inf)",
    "det.shorter_sides": "[1, inf)", "det.max_size": "[1, inf)", "det.crop_shorter_sides": "[1, inf)",
    "det.crop_size": "[1, inf)", "det.lsj_size": "[1, inf)", "det.lsj_range": "(0, inf)", "det.test_scale": "[1, inf)",
    "head.channels": "[1, inf)", "head.pool_scales": "[1, inf)", "head.dropout": "[0, 1)",
    "head.auxiliary_channels": "[1, inf)", "head.auxiliary_index": "[0, inf)", "head.auxiliary_weight": "[0, inf)",
    "seg.crop_size": "[1, inf)", "seg.class_weight": "[0, inf)", "seg.scale": "[1, inf)", "seg.ratio_range": "(0, inf)",
    "seg.cat_max_ratio": "(0, 1]",
    "seg.slide_crop": "[1, inf)", "seg.slide_stride": "[1, inf)", "seg.tta_ratios": "(0, inf)",
    "seg.scene_size": "[32, inf)", "seg.scenes": "[1, inf)", "seg.val_scenes": "[1, inf)",
    "train.seed": f"[0, {2**62}]", "train.ema_decay": "[0, 1]", "train.stages.epochs": "[1, inf)",
    "train.stages.img_size": "[1, inf)", "train.stages.window_size": "[1, inf)", "train.eval_every": "[1, inf)",
    "train.log_every": "[1, inf)", "train.save_every_steps": "[0, inf)", "train.stop_after_steps": "[1, inf)",
    "train.max_nonfinite": "[1, inf)", "train.threads": "[1, inf)",
    "ssl.momentum": "[0, 1]", "ssl.temperature": "(0, inf)", "ssl.queue_size": "[1, inf)", "ssl.proj_dim": "[1, inf)",
    "ssl.hidden_dim": "[1, inf)", "ssl.proj_layers": "[1, inf)", "ssl.pred_layers": "[1, inf)",
    "ssl.target_drop_path_rate": "[0, 1)", "ssl.color_jitter_prob": "[0, 1]", "ssl.grayscale_prob": "[0, 1]",
    "ssl.blur_prob": "[0, 1]", "ssl.blur_sigma": "(0, inf)", "ssl.solarize_prob": "[0, 1]",
    "ssl.mask_ratio": "[0, 1)", "ssl.mask_patch_size": "[1, inf)", "ssl.norm_target_window": "[1, inf)",
    "ssl.knn_k": "[1, inf)", "ssl.knn_temperature": "(0, inf)", "ssl.knn_every": "[0, inf)",
}  # fmt: skip
# Lists of a fixed length; PAIRS hold (low, high) and must not decrease.
LENGTHS = {"optim.betas": 2, "data.scale": 2, "data.ratio": 2, "ssl.blur_prob": 2, "ssl.blur_sigma": 2,
           "ssl.solarize_prob": 2, "seg.crop_size": 2, "seg.scale": 2, "seg.ratio_range": 2, "seg.slide_crop": 2,
           "seg.slide_stride": 2, "head.anchor_sizes": 5, "det.crop_size": 2, "det.lsj_range": 2,
           "det.test_scale": 2}  # fmt: skip
PAIRS = ("data.scale", "data.ratio", "ssl.blur_sigma", "seg.ratio_range", "det.crop_size", "det.lsj_range")
DEVICE = re.compile(r"^(auto|cpu|cuda|mps|xpu|npu|hpu)(:\d+)?$")


# --- the seed systems' flat keys --------------------------------------------------------------------------------
# One table: flat key -> (dotted swinkit key, value converter or None).
def _amp_level(level: str) -> str:
    # MindSpore O0 is full fp32; O1/O2/O3 run the network in fp16 with loss scaling, i.e. fp16 autocast here.
    levels = {"O0": "fp32", "O1": "fp16", "O2": "fp16", "O3": "fp16"}
    if not isinstance(level, str) or level.upper() not in levels:
        raise ConfigError(f"amp_level: {shown(level)} is not a MindSpore level; valid: {', '.join(levels)}")
    return levels[level.upper()]


def _dataset_set(name: str) -> str:
    if not isinstance(name, str) or name.lower() != "imagenet":
        raise ConfigError(f"set: {shown(name)} is not supported; only ImageNet (folder layout) is")
    return "folder"


def _scheduler(name: str) -> str:
    names = {"cosine_lr": "cosine", "constant_lr": "constant"}
    if not isinstance(name, str) or name not in names:
        raise ConfigError(f"lr_scheduler: {shown(name)} is not supported; valid: {', '.join(names)}")
    return names[name]


FLAT_KEYS: dict[str, tuple[str, Any]] = {
    "arch": ("model.name", None),
    "num_classes": ("model.num_classes", None),
    "image_size": ("model.img_size", None),
    "drop_path_rate": ("model.drop_path_rate", None),
    "patch_size": ("model.patch_size", None),
    "embed_dim": ("model.embed_dim", None),
    "depth": ("model.depths", None),
    "num_heads": ("model.num_heads", None),
    "split_size": ("model.split_size", None),
    "mlp_ratio": ("model.mlp_ratio", None),
    "window_size": ("model.window_size", None),
    "pretrained": ("model.pretrained", None),
    "data_url": ("data.root", None),
    "set": ("data.dataset", _dataset_set),
    "batch_size": ("data.batch_size", None),
    "num_parallel_workers": ("data.workers", None),
    "mix_up": ("data.mixup", None),
    "cutmix": ("data.cutmix", None),
    "mixup_prob": ("data.mixup_prob", None),
    "switch_prob": ("data.switch_prob", None),
    "mixup_mode": ("data.mixup_mode", None),
    "auto_augment": ("data.auto_augment", None),
    "interpolation": ("data.interpolation", None),
    "re_prob": ("data.re_prob", None),
    "re_mode": ("data.re_mode", None),
    "re_count": ("data.re_count", None),
    "crop_pct": ("data.crop_pct", None),
    "crop_ratio": ("data.crop_pct", None),
    "label_smoothing": ("data.label_smoothing", None),
    "optimizer": ("optim.name", None),
    "base_lr": ("optim.lr", None),
    "weight_decay": ("optim.weight_decay", None),
    "beta": ("optim.betas", None),
    "clip_global_norm_value": ("optim.clip_grad", None),
    "lr_scheduler": ("sched.name", _scheduler),
    "epochs": ("sched.epochs", None),
    "warmup_length": ("sched.warmup_epochs", None),
    "warmup_lr": ("sched.warmup_lr", None),
    "min_lr": ("sched.min_lr", None),
    "cooldown_epochs": ("sched.cooldown_epochs", None),
    "cool_length": ("sched.cool_epochs", None),
    "cool_lr": ("sched.cool_lr", None),
    "tail_length": ("sched.tail_epochs", None),
    "tail_lr": ("sched.tail_lr", None),
    "over_length": ("sched.over_epochs", None),
    "over_lr": ("sched.over_lr", None),
    "amp_level": ("train.precision", _amp_level),
    "enable_ema": ("train.ema", None),
    "ema_decay": ("train.ema_decay", None),
}

# Flat keys that have no meaning in swinkit, with the reason given in the warning.
IGNORED_FLAT_KEYS: dict[str, str] = {
    "device_target": "the device is chosen by train.device",
    "keep_bn_fp32": "autocast keeps normalisation in fp32",
    "loss_scale": "fp16 uses dynamic loss scaling",
    "is_dynamic_loss_scale": "fp16 always uses dynamic loss scaling",
    "use_global_norm": "clipping is on whenever clip_global_norm_value is set",
    "momentum": "AdamW has no momentum",
}

# MindSpore uses base_lr as given (no linear scaling by batch), so a flat config sets optim.lr_base_batch to None.
FLAT_FIXED = {"optim.lr_base_batch": None}


def is_flat(data: dict) -> bool:
    """A seed-style file: it names ``arch`` or uses flat keys and none of swinkit's sections."""
    sections = {f.name for f in dataclasses.fields(Config)} - {"name"}
    if "arch" in data:
        return True
    return not set(data) & sections and bool(set(data) & (set(FLAT_KEYS) | set(IGNORED_FLAT_KEYS)))


def from_flat(data: dict, source: str = "config") -> tuple[dict, list[str]]:
    """Translate a seed-style flat dict into swinkit's nested dict; returns it and the ignored keys."""
    nested: dict = {}
    ignored = []
    for key, value in data.items():
        if key in IGNORED_FLAT_KEYS:
            ignored.append(key)
            continue
        if key not in FLAT_KEYS:
            raise ConfigError(f"{source}: unknown flat key {shown(key)}{_hint(key, [*FLAT_KEYS, *IGNORED_FLAT_KEYS])}")
        dotted, convert = FLAT_KEYS[key]
        _set_dotted(nested, dotted, convert(value) if convert else value)
    for dotted, value in FLAT_FIXED.items():
        _set_dotted(nested, dotted, value)
    stem = Path(source).stem
    nested["name"] = stem
    return nested, ignored


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


# --- schema checking ----------------------------------------------------------------------------------------------
def _hint(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5) if len(str(key)) <= 100 else []
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else f"; valid: {', '.join(valid)}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (e.g. '1e-3' -> 0.001 for a float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise (
            errors[0]
            if len(errors) == 1
            else ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {shown(value)}")
        )
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item)}, got {type(value).__name__} "
                              f"{shown(value)}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {type(value).__name__}")
        return _build(tp, value, key)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if (tp is bool and isinstance(value, bool)) or (tp is str and isinstance(value, str)):
        return value
    if tp is int and is_number and float(value).is_integer():
        return int(value)
    if tp is float and is_number:
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads '1e-3' (no dot) as a string.
        with contextlib.suppress(ValueError):
            return float(value)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {shown(value)}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            valid = [f"{prefix}.{n}" if prefix else n for n in names]
            raise ConfigError(f"unknown config key {shown(dotted)}{_hint(dotted, valid)}")
        value = _coerce(value, hints[key], dotted)
        if dotted in CHOICES and value is not None and value not in CHOICES[dotted]:
            raise ConfigError(f"{dotted}: {shown(value)} is not one of {', '.join(map(repr, CHOICES[dotted]))}")
        _check_range(dotted, value)
        kwargs[key] = value
    return cls(**kwargs)


def _in_interval(value: float, interval: str) -> bool:
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    try:
        return math.isfinite(value) and above and below
    except OverflowError:  # an integer of hundreds of digits
        return False


def _interval_text(interval: str) -> str:
    """``[1, inf)`` as ``>= 1``, ``(0, inf)`` as ``> 0``; a bounded interval as itself, after ``in``."""
    low, high = (bound.strip() for bound in interval[1:-1].split(","))
    if high == "inf" and low != "-inf":
        return f"{'>=' if interval[0] == '[' else '>'} {low}"
    return f"in {interval}"


def _check_range(dotted: str, value: Any) -> None:
    """Numbers inside their ``RANGES`` interval and finite, lists of their ``LENGTHS``, ``PAIRS`` in order; a device
    name torch knows; a run name inside runs/; an augmentation policy timm can parse."""
    table_key = re.sub(r"\[\d+\]", "", dotted)
    values = value if isinstance(value, list) else [value]
    if table_key in RANGES:
        for v in values:
            if isinstance(v, int | float) and not _in_interval(v, RANGES[table_key]):
                raise ConfigError(f"{dotted}: {shown(value)} is out of range; it must be a finite number "
                                  f"{_interval_text(RANGES[table_key])}")  # fmt: skip
    if table_key in LENGTHS and isinstance(value, list) and len(value) != LENGTHS[table_key]:
        raise ConfigError(f"{dotted}: {shown(value)} has {len(value)} values; it takes {LENGTHS[table_key]}")
    if table_key in PAIRS and isinstance(value, list) and value[0] > value[1]:
        raise ConfigError(f"{dotted}: {shown(value)} is (low, high); the first must not exceed the second")
    if dotted == "train.device" and not DEVICE.match(value):
        raise ConfigError(f"train.device: {shown(value)} is not a device; use auto, cpu, cuda, cuda:N, mps, xpu or npu")
    if dotted == "name" and not _plain_run_name(value):
        raise ConfigError(f"name: {shown(value)} must be a plain run name (it names runs/<name>: letters, digits, "
                          "'-', '_', '.', no '..' or '.' parts); use --output for a path")  # fmt: skip
    if dotted == "data.auto_augment" and value:
        _check_augment_policy(value)


def _plain_run_name(name: str) -> bool:
    parts = name.split("/")
    return (bool(name.strip()) and not name.startswith("/") and name.isprintable()
            and all(part not in ("", ".", "..") for part in parts))  # fmt: skip


def _check_augment_policy(policy: str) -> None:
    """Refuse what timm's augmentation parsers refuse (they raise, or assert, on the first bad section)."""
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform

    build = {"rand": rand_augment_transform, "augmix": augment_and_mix_transform}.get(policy.split("-")[0],
                                                                                      auto_augment_transform)
    try:
        build(policy, {})
    except Exception as err:  # timm's parsers raise AssertionError, KeyError, ValueError ...
        raise ConfigError(f"data.auto_augment: {shown(policy)} is not a policy timm knows ({type(err).__name__}: "
                          f"{shown(str(err))}); e.g. rand-m9-mstd0.5-inc1, augmix-m5-w4-d2, original, or null "
                          "for none") from err  # fmt: skip


def check_schedule(cfg: Config) -> None:
    """Warn when the run ends inside its warmup; refuse phases that cannot fit in the run."""
    s = cfg.sched
    epochs = sum(stage.epochs for stage in cfg.train.stages) if cfg.train.stages else s.epochs
    if s.name == "step" and (s.milestones != sorted(set(s.milestones)) or any(m >= epochs for m in s.milestones)):
        raise ConfigError(f"sched.milestones={s.milestones}: epochs after which the rate drops, increasing and each "
                          f"before the run's end ({epochs} epochs)")  # fmt: skip
    if s.warmup_iterations is not None:
        return  # counted in steps; the run's steps per epoch are known once its data is
    fixed = s.warmup_epochs + s.cooldown_epochs + s.cool_epochs + s.tail_epochs + s.over_epochs
    if s.warmup_epochs >= epochs:
        log.warning("sched.warmup_epochs=%g is not shorter than the run (%d epochs): the learning rate never reaches "
                    "optim.lr; lower sched.warmup_epochs", s.warmup_epochs, epochs)  # fmt: skip
    elif fixed > epochs:
        raise ConfigError(
            f"sched: warmup and the constant phases take {fixed:g} epochs, more than the run's {epochs}; shorten them "
            "or raise sched.epochs"
        )


def resolve_iterations(cfg: Config) -> Config:
    """A schedule counted in iterations (``sched.iterations``, ``sched.warmup_iterations``) as the epochs the loop
    counts in: ``sched.iterations / train.iterations_per_epoch`` epochs, each one evaluation and checkpoint interval.
    A config without ``sched.iterations`` is returned as it is."""
    s, per = cfg.sched, cfg.train.iterations_per_epoch
    if s.iterations is None:
        if per is not None:
            raise ConfigError("train.iterations_per_epoch divides an iteration schedule: set sched.iterations too "
                              "(or leave it unset to count epochs as passes over the data)")  # fmt: skip
        return cfg
    if per is None:
        raise ConfigError(f"sched.iterations={s.iterations} needs train.iterations_per_epoch: the iterations between "
                          "evaluations and checkpoints (e.g. 16000 for mmseg's 160k schedule)")  # fmt: skip
    if s.iterations % per:
        raise ConfigError(f"sched.iterations={s.iterations} is not a multiple of train.iterations_per_epoch={per}")
    if cfg.train.stages:
        raise ConfigError("train.stages count in epochs; a schedule in sched.iterations has one stage")
    warmup = (s.warmup_iterations or 0) / per
    return dataclasses.replace(cfg, sched=dataclasses.replace(s, epochs=s.iterations // per, warmup_epochs=warmup))


def _all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        out.append(dotted)
        if dataclasses.is_dataclass(hints[f.name]):
            out += _all_keys(hints[f.name], dotted + ".")
    return out


def config_from_dict(data: dict, source: str = "config") -> Config:
    """Validate a nested (or seed-style flat) dict into a ``Config``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if is_flat(data):
        data, ignored = from_flat(data, source)
        if ignored:
            reasons = "; ".join(f"{k} ({IGNORED_FLAT_KEYS[k]})" for k in ignored)
            log.warning("%s: ignoring keys with no meaning in swinkit: %s", source, reasons)
    return _build(Config, data)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply dotted ``key=value`` overrides (values parsed as YAML) and re-validate."""
    data = to_dict(cfg)
    valid = _all_keys()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {shown(item)} is not key=value (e.g. optim.lr=1e-3)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in valid:
            raise ConfigError(f"unknown config key {shown(key)}{_hint(key, valid)}")
        value = parse_yaml(raw, f"override {shown(item)}") if raw.strip() else None
        _set_dotted(data, key, value)
    return _build(Config, data)


MAX_YAML_BYTES = 1 << 20  # a recipe is a few kilobytes
MAX_YAML_NODES = 10_000  # values in the document once every alias is expanded
MAX_YAML_DEPTH = 32  # a recipe nests four levels (train.stages[i].img_size)


class _PlainLoader(yaml.SafeLoader):
    """PyYAML's safe loader that first refuses documents whose aliases would expand past ``MAX_YAML_NODES`` values
    (a "billion laughs" is a few hundred bytes), that refer to themselves, or that nest past ``MAX_YAML_DEPTH``."""

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node, 0, {}, set())
        return super().construct_document(node)


def _expanded_size(node: yaml.Node, depth: int, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values ``node`` holds with every alias expanded (aliases share their node, so each is counted once
    per reference without expanding it)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if depth > MAX_YAML_DEPTH:
        raise ConfigError(f"nested deeper than {MAX_YAML_DEPTH} levels at line {node.start_mark.line + 1}; a config "
                          "is a few levels of plain keys")  # fmt: skip
    if id(node) in open_nodes:
        raise ConfigError(f"an alias at line {node.start_mark.line + 1} refers to its own anchor; configs hold plain "
                          "values only")  # fmt: skip
    open_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1 + sum(_expanded_size(child, depth + 1, sizes, open_nodes) for child in children)
    open_nodes.discard(id(node))
    if size > MAX_YAML_NODES:
        raise ConfigError(f"its aliases expand to more than {MAX_YAML_NODES} values (an alias bomb?); configs hold "
                          "plain values only")  # fmt: skip
    sizes[id(node)] = size
    return size


def parse_yaml(text: str | bytes, source: str) -> Any:
    """YAML with plain types only, of bounded size once aliases are expanded: a syntax error, a tag such as
    ``!!python/object``, bytes that are not UTF-8, more than ``MAX_YAML_BYTES``, an alias bomb or deep nesting is a
    ``ConfigError`` naming ``source``."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: {len(text)} bytes, more than any config ({MAX_YAML_BYTES >> 20} MiB); refused")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"{source}: not UTF-8 text (byte {err.start}); save the config as UTF-8") from err
    try:
        return yaml.load(text, Loader=_PlainLoader)  # SafeLoader's plain types, bounded
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from err
    except RecursionError as err:
        raise ConfigError(f"{source}: nested deeper than {MAX_YAML_DEPTH} levels; a config is a few levels of plain "
                          "keys") from err  # fmt: skip
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{source}{where}: not valid YAML ({shown(problem)}); configs hold plain values "
                          "only") from err  # fmt: skip
    except (ValueError, OverflowError) as err:  # a value YAML reads but Python cannot hold (a 5,000-digit number)
        raise ConfigError(f"{source}: a value cannot be read ({shown(str(err))})") from err


def list_configs() -> list[str]:
    """Names of the recipes shipped in ``swinkit/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"unknown config {shown(name_or_path)}{_hint(name_or_path, list_configs())}")


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Read a shipped recipe by name or a YAML file, then apply overrides. ``None`` is the quick start."""
    path = resolve_config_path(name_or_path or DEFAULT_CONFIG)
    try:
        text = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot be read ({os.strerror(err.errno or 0)})") from err
    data = parse_yaml(text, str(path)) or {}
    if isinstance(data, dict) and not is_flat(data):
        data.setdefault("name", path.stem)
    cfg = config_from_dict(data, str(path))
    return apply_overrides(cfg, overrides or [])


def to_dict(cfg: Config) -> dict:
    return asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    text = to_yaml(cfg)
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))

"""``swinkit train`` of a detector (``maskrcnn_*``, ``fasterrcnn_*``): the ``Detection`` objective on the one loop.

The recipe builds the datasets of ``data.dataset`` (``digit_scenes`` or ``coco``), the model from ``model.*`` (its
backbone's keys routed to the backbone), ``head.*`` and ``det.test_scale``, and the loaders of the detection
pipeline (``det.*``, ``data.hflip``). Epochs are passes over the training images (mmdet's 1x and 3x schedules:
``sched.name=step``); an iteration schedule (``sched.iterations``) repeats the set as segmentation runs do.
"""

from __future__ import annotations

from ..core import device as devices
from ..core.errors import ConfigError
from ..data.build import build_detection_datasets
from ..data.detection import DetectionPipeline, detection_loader
from ..models import MaskRCNN, model_info
from .config import Config
from .loop import Stage
from .objectives import Detection
from .setup import Session, build_model


class DetectionRecipe:
    """The datasets of ``cfg.data`` and, per stage, the detector and its loaders."""

    command = "train"
    counts_iterations = True

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.masks = issubclass(model_info(cfg.model.name).cls, MaskRCNN)
        self.train_base, self.val_base = build_detection_datasets(cfg.data, cfg.seg, cfg.det, self.masks)
        self.classes = list(self.train_base.classes)
        self.train_size = len(self.train_base)
        self.kind = cfg.model.name
        if cfg.model.num_classes is not None and cfg.model.num_classes != len(self.classes):
            raise ConfigError(
                f"model.num_classes={cfg.model.num_classes} but the data has {len(self.classes)} object classes; set "
                f"model.num_classes={len(self.classes)} or leave it unset"
            )
        if list(self.val_base.classes) != self.classes:
            raise ConfigError(f"the {cfg.data.train_split} and {cfg.data.val_split} splits name different categories")

    def check(self, cfg: Config, s: Session) -> None:
        if cfg.train.stages:
            raise ConfigError("train.stages (progressive resolution) is for classification; a detector trains at "
                              "det.shorter_sides")  # fmt: skip
        if cfg.train.channels_last:
            raise ConfigError("train.channels_last is for classification and segmentation; a detector batches "
                              "images of several sizes")  # fmt: skip

    def build(self, stage: Stage, s: Session) -> Detection:
        cfg, det, env = self.cfg, self.cfg.det, s.env
        model = build_model(cfg, len(self.classes))
        train = DetectionPipeline(
            train=True, shorter_sides=tuple(det.shorter_sides), max_size=det.max_size, crop_policy=det.crop_policy,
            crop_shorter_sides=tuple(det.crop_shorter_sides), crop_size=tuple(det.crop_size), lsj=det.lsj,
            lsj_size=det.lsj_size, lsj_range=tuple(det.lsj_range), flip=cfg.data.hflip,
        )  # fmt: skip
        per_epoch = None
        if cfg.train.iterations_per_epoch:
            per_epoch = cfg.train.iterations_per_epoch * cfg.optim.accum_steps * cfg.data.batch_size * env.world_size
        shared = dict(rank=env.rank, world_size=env.world_size, seed=cfg.train.seed, workers=cfg.data.workers,
                      pin_memory=devices.pin_memory(s.device), masks=self.masks)  # fmt: skip
        train_loader = detection_loader(self.train_base, train, batch_size=cfg.data.batch_size, train=True,
                                        shuffle=cfg.data.shuffle, samples_per_epoch=per_epoch, **shared)  # fmt: skip
        val_loader = detection_loader(self.val_base, DetectionPipeline(train=False),
                                      batch_size=cfg.data.eval_batch_size or 1, train=False, **shared)  # fmt: skip
        return Detection(cfg, s, model, train_loader, val_loader, self.classes, self.train_base.category_ids)

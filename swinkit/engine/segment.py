"""``swinkit train`` of a segmentation model (``upernet_*``): the ``Segmentation`` objective on the one loop.

The recipe builds the datasets of ``data.dataset`` (``digit_scenes`` or a ``segmentation`` folder), the model from
``model.*`` (its backbone's keys routed to the backbone) and ``head.*``, and the loaders of mmseg's pipeline
(``seg.*``). With ``sched.iterations`` an epoch is ``train.iterations_per_epoch`` optimizer steps over the training
set repeated end to end (mmseg's iteration-based runs); otherwise an epoch is a pass over the set.
"""

from __future__ import annotations

import logging

from torch import nn

from ..core import device as devices
from ..core.errors import ConfigError
from ..data.build import build_segmentation_datasets
from ..data.segmentation import Pipeline, segmentation_loader
from ..data.transforms import mean_std
from .config import Config
from .loop import Stage
from .objectives import Segmentation
from .setup import Session, build_model, check_step_fits

log = logging.getLogger(__name__)


class SegmentationRecipe:
    """The datasets of ``cfg.data`` and, per stage, the segmentation model and its loaders."""

    command = "train"
    counts_iterations = True

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.train_base, self.val_base = build_segmentation_datasets(cfg.data, cfg.seg)
        self.classes = list(self.train_base.classes)
        self.train_size = len(self.train_base)
        self.kind = cfg.model.name
        if cfg.model.num_classes is not None and cfg.model.num_classes != len(self.classes):
            raise ConfigError(
                f"model.num_classes={cfg.model.num_classes} but the data's class list has {len(self.classes)} "
                f"classes; set model.num_classes={len(self.classes)} or leave it unset, or give the folder a "
                "classes.txt with one name per class"
            )
        if list(self.val_base.classes) != self.classes:
            raise ConfigError(f"the {cfg.data.train_split} and {cfg.data.val_split} splits name different classes")

    def check(self, cfg: Config, s: Session) -> None:
        if cfg.train.stages:
            raise ConfigError("train.stages (progressive resolution) is for classification; a segmentation run "
                              "trains at seg.crop_size")  # fmt: skip

    def build(self, stage: Stage, s: Session) -> Segmentation:
        cfg, env = self.cfg, s.env
        crop = tuple(cfg.seg.crop_size)
        model = build_model(cfg, len(self.classes), crop)
        if env.enabled and devices.has_sync_batchnorm(s.device):
            # the heads' BatchNorm over the global batch, as mmseg's SyncBN; CPU runs keep per-process statistics
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        check_step_fits(model, cfg.data.batch_size, crop, s.device, training=True)
        mean, std = mean_std(cfg.data, model.model_info)
        train = Pipeline(train=True, mean=mean, std=std, crop_size=crop,
                         scale=tuple(cfg.seg.scale) if cfg.seg.scale else None, ratio_range=tuple(cfg.seg.ratio_range),
                         cat_max_ratio=cfg.seg.cat_max_ratio, flip=cfg.data.hflip,
                         photometric=cfg.seg.photometric)  # fmt: skip
        per_epoch = None
        if cfg.train.iterations_per_epoch:
            per_epoch = cfg.train.iterations_per_epoch * cfg.optim.accum_steps * cfg.data.batch_size * env.world_size
        shared = dict(rank=env.rank, world_size=env.world_size, seed=cfg.train.seed, workers=cfg.data.workers,
                      pin_memory=devices.pin_memory(s.device), reduce_zero_label=cfg.seg.reduce_zero_label)  # fmt: skip
        train_loader = segmentation_loader(self.train_base, train, batch_size=cfg.data.batch_size, train=True,
                                           shuffle=cfg.data.shuffle, samples_per_epoch=per_epoch, **shared)  # fmt: skip
        val_loader = segmentation_loader(self.val_base, Pipeline(train=False, mean=mean, std=std),
                                         batch_size=cfg.data.eval_batch_size or 1, train=False, **shared)  # fmt: skip
        return Segmentation(cfg, s, model, train_loader, val_loader, self.classes)

"""``swinkit train``: supervised training, fine-tuning and linear probing of a registry model.

``train(cfg)`` builds a ``Classification`` objective for each stage (its model at the stage's image size and
window, with train and validation loaders) and runs it through the one loop, ``swinkit.engine.loop.fit``. A run
directory receives ``config.yaml``, ``metrics.jsonl``, ``curves.png`` and ``checkpoints/{last,best}/``;
``resume=RUN_DIR`` continues from ``last/`` at the exact step it was written.
"""

from __future__ import annotations

import logging

from .. import models
from ..core import device as devices
from ..core.errors import ConfigError, NonFiniteLossError, RunExistsError, TooManyBadImagesError
from ..data import build_datasets, build_loader, build_transform
from .config import Config
from .detect import DetectionRecipe
from .loop import Stage, fit
from .objectives import Classification
from .optim import freeze_backbone
from .segment import SegmentationRecipe
from .setup import Session, build_model, check_step_fits

log = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "RunExistsError", "TooManyBadImagesError", "train"]


class SupervisedRecipe:
    """The datasets of ``cfg.data`` and, per stage, the classifier and its loaders."""

    command = "train"
    counts_iterations = False

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.train_base, self.val_base = build_datasets(cfg.data)
        self.train_size = len(self.train_base)
        found = len(self.train_base.classes)
        self.num_classes = cfg.model.num_classes or found
        self.kind = cfg.model.name
        if self.num_classes < found or (self.num_classes > found and not cfg.model.allow_unused_classes):
            more = (" (or model.allow_unused_classes=true where a larger head is deliberate: its extra outputs are "
                    "never a target)") if self.num_classes > found else ""  # fmt: skip
            raise ConfigError(
                f"model.num_classes={self.num_classes} but the training data has {found} classes; set "
                f"model.num_classes={found} or leave it unset to take the data's{more}"
            )

    def check(self, cfg: Config, s: Session) -> None:
        pass

    def build(self, stage: Stage, s: Session) -> Classification:
        cfg, env = self.cfg, s.env
        model = build_model(cfg, self.num_classes, stage.img_size, stage.window_size)
        check_step_fits(model, cfg.data.batch_size, model.img_size, s.device, training=True)
        if cfg.train.linear_probe:
            frozen = freeze_backbone(model)
            log.info("linear probe: froze %d backbone tensors; training head.fc only", len(frozen))
        info = model.model_info
        img_size = model.img_size[0]
        shared = dict(data=cfg.data, rank=env.rank, world_size=env.world_size, seed=cfg.train.seed,
                      pin_memory=devices.pin_memory(s.device))  # fmt: skip
        train_loader = build_loader(self.train_base, build_transform(cfg.data, img_size, True, info), train=True,
                                    batch_size=cfg.data.batch_size, **shared)  # fmt: skip
        val_loader = build_loader(self.val_base, build_transform(cfg.data, img_size, False, info), train=False,
                                  batch_size=cfg.data.eval_batch_size or cfg.data.batch_size, **shared)  # fmt: skip
        return Classification(cfg, s, model, train_loader, val_loader, self.num_classes, self.train_base.classes)


def train(cfg: Config, resume: str | None = None) -> dict:
    """Train (or continue) a run; returns the final record (the last line of ``metrics.jsonl``).

    Raises:
        RunExistsError: the output directory already holds a run and ``resume`` is not given.
        NonFiniteLossError: the loss stayed non-finite (fp32/bf16); ``last/`` keeps the last good state.
        TooManyBadImagesError: more than ``data.max_bad_fraction`` of the training images are unreadable.
    """
    if models.is_segmentation(cfg.model.name):
        return fit(cfg, resume, SegmentationRecipe(cfg))
    if models.is_detection(cfg.model.name):
        return fit(cfg, resume, DetectionRecipe(cfg))
    return fit(cfg, resume, SupervisedRecipe(cfg))

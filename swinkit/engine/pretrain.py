"""``swinkit pretrain``: self-supervised pretraining with MoBY (two augmented views) or SimMIM (masked images).

``ssl.method`` picks the meta-architecture from ``swinkit.ssl`` around ``model.name`` (a registry model, or
``timm:<name>`` for MoBY), and ``pretrain(cfg)`` runs it through the one loop (``swinkit.engine.loop.fit``) as a
``SelfSupervised`` objective: the same run directory, schedule, optimizer groups, AMP, DDP, checkpoints, exact
resume and ``train.*`` settings as ``swinkit train``. ``best/`` is the epoch with the best kNN top-1.

Settings that have no meaning here are refused: ``train.stages``, ``train.linear_probe``, ``train.ema`` (the
meta-architectures keep their own target networks), and for MoBY ``optim.accum_steps`` (it updates its target and
its queues at every forward).

The checkpoint's ``model.safetensors`` holds the whole meta-architecture in the official key layout
(``encoder.*``, ``encoder_k.*``, ``projector.*``, ... ``queue1``); ``swinkit train model.pretrained=<that file>``
starts from its online encoder.
"""

from __future__ import annotations

from ..core import device as devices
from ..core.errors import ConfigError
from ..data import build_datasets, build_loader, build_transform, build_two_view_transform
from ..ssl import MoBY, SimMIM, build_moby, build_simmim, encoder_info
from .config import Config
from .loop import Stage, fit, steps_per_epoch
from .objectives import SelfSupervised
from .setup import Session, check_step_fits, model_overrides


def build_ssl_model(cfg: Config) -> MoBY | SimMIM:
    """The meta-architecture of ``cfg.ssl.method`` around ``cfg.model.name`` with the config's model overrides."""
    overrides = model_overrides(cfg)
    overrides.pop("num_classes", None)  # encoders have no classifier
    drop_path = overrides.pop("drop_path_rate", None)
    s = cfg.ssl
    if s.method == "moby":
        return build_moby(
            cfg.model.name, drop_path_rate=drop_path, target_drop_path_rate=s.target_drop_path_rate,
            backbone_kwargs=overrides, momentum=s.momentum, temperature=s.temperature, queue_size=s.queue_size,
            proj_dim=s.proj_dim, hidden_dim=s.hidden_dim, proj_layers=s.proj_layers, pred_layers=s.pred_layers,
        )  # fmt: skip
    if drop_path is not None:
        overrides["drop_path_rate"] = drop_path
    return build_simmim(
        cfg.model.name, backbone_kwargs=overrides, mask_ratio=s.mask_ratio, mask_patch_size=s.mask_patch_size,
        norm_target_window=s.norm_target_window,
    )  # fmt: skip


class PretrainRecipe:
    """The datasets of ``cfg.data`` (labels feed the kNN monitor only) and the meta-architecture with its loaders."""

    command = "pretrain"
    counts_iterations = False

    def __init__(self, cfg: Config) -> None:
        moby = cfg.ssl.method == "moby"
        refused = {
            "train.stages": bool(cfg.train.stages), "train.linear_probe": cfg.train.linear_probe,
            "train.ema": cfg.train.ema, "optim.accum_steps (MoBY)": moby and cfg.optim.accum_steps != 1,
        }  # fmt: skip
        if any(refused.values()):
            raise ConfigError(
                f"swinkit pretrain does not support {', '.join(k for k, v in refused.items() if v)}: stages and linear "
                "probes are for swinkit train, the meta-architectures keep their own target networks instead of an "
                "EMA, and MoBY updates its target and queues at every forward; remove these settings"
            )
        self.cfg = cfg
        self.train_base, self.val_base = build_datasets(cfg.data)
        self.train_size = len(self.train_base)
        self.kind = f"{cfg.ssl.method} {cfg.model.name}"

    def check(self, cfg: Config, s: Session) -> None:
        global_batch = cfg.data.batch_size * s.env.world_size
        if cfg.ssl.method == "moby" and cfg.ssl.queue_size % global_batch:
            raise ConfigError(
                f"ssl.queue_size={cfg.ssl.queue_size} is not a multiple of the global batch {global_batch} "
                f"(data.batch_size {cfg.data.batch_size} x {s.env.world_size} processes)"
            )
        if cfg.ssl.method == "moby" and cfg.train.parallel == "fsdp" and not cfg.train.fsdp_reshard_after_forward:
            raise ConfigError(
                "MoBY with train.parallel=fsdp needs train.fsdp_reshard_after_forward=true: its momentum update runs "
                "between the online and the target forward, on the sharded parameters"
            )

    def build(self, stage: Stage, s: Session) -> SelfSupervised:
        cfg, env = self.cfg, s.env
        model = build_ssl_model(cfg)
        if cfg.ssl.method == "moby" and env.enabled and devices.has_sync_batchnorm(s.device):
            model.convert_sync_batchnorm()  # SyncBatchNorm has no CPU kernels; CPU runs keep per-process statistics
        info = encoder_info(model.encoder, cfg.model.img_size)
        check_step_fits(model.encoder, cfg.data.batch_size, info.img_size, s.device, training=True)
        if cfg.ssl.method == "moby":
            train_transform = build_two_view_transform(cfg.data, cfg.ssl, info.img_size, info)
        else:
            train_transform = build_transform(cfg.data, info.img_size, True, info)
        shared = dict(data=cfg.data, rank=env.rank, world_size=env.world_size, seed=cfg.train.seed,
                      pin_memory=devices.pin_memory(s.device))  # fmt: skip
        train_loader = build_loader(self.train_base, train_transform, batch_size=cfg.data.batch_size, train=True,
                                    **shared)  # fmt: skip
        eval_transform = build_transform(cfg.data, info.img_size, False, info)
        eval_batch = cfg.data.eval_batch_size or cfg.data.batch_size
        bank_loader = build_loader(self.train_base, eval_transform, batch_size=eval_batch, train=False, **shared)
        val_loader = build_loader(self.val_base, eval_transform, batch_size=eval_batch, train=False, **shared)
        total_steps = steps_per_epoch(cfg, self.train_size, env.world_size) * cfg.sched.epochs
        return SelfSupervised(cfg, s, model, train_loader, bank_loader, val_loader, total_steps)


def pretrain(cfg: Config, resume: str | None = None) -> dict:
    """Pretrain (or continue pretraining) a run; returns the final record (the last line of ``metrics.jsonl``).

    Raises:
        ConfigError: settings pretraining does not support, or a queue that is not a multiple of the global batch.
        RunExistsError: the output directory already holds a run and ``resume`` is not given.
        NonFiniteLossError: the loss stayed non-finite (fp32/bf16); ``last/`` keeps the last good state.
    """
    return fit(cfg, resume, PretrainRecipe(cfg))

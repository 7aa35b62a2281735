"""``swinkit bench-data``: decoded-and-augmented images per second of a config's training pipeline, per loader worker
and in total, for each reader (folder, shards, Hugging Face dataset).

Each measurement builds the loader the training run would build (its dataset, its transform at the model's input
size, its batch size, one process), takes one batch to start the workers, then times the next batches over as many
epochs as it takes. With ``W`` workers the total rate is what a training process gets; divided by ``W`` it is what
one worker (one CPU core) delivers, so a GPU that trains at ``R`` img/s needs about ``R / per-worker`` workers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from ..core.errors import ConfigError
from ..data import build_datasets, build_loader, build_transform, dataset_kind
from ..models import model_info


@dataclass
class Rate:
    reader: str
    root: str
    workers: int
    images: int
    seconds: float

    @property
    def total(self) -> float:
        return self.images / self.seconds

    @property
    def per_worker(self) -> float:
        return self.total / max(self.workers, 1)


def measure_loaders(cfg, workers: list[int], images: int):
    """Yields the ``Rate`` of ``cfg``'s training loader with each count of ``workers``, timed over at least
    ``images`` images; the dataset and the transform are built once."""
    data = cfg.data
    train_set, _ = build_datasets(data)
    kind = dataset_kind(data.dataset, data.root)
    info = model_info(cfg.model.name)
    transform = build_transform(data, cfg.model.img_size or info.img_size[0], True, info)
    for count in workers:
        loader = build_loader(train_set, transform, data=replace(data, workers=count), batch_size=data.batch_size,
                              train=True, seed=cfg.train.seed)  # fmt: skip
        if len(loader) == 0:
            raise ConfigError(f"{data.root or data.dataset}: {len(train_set)} training images make no batch of "
                              f"{data.batch_size}; lower data.batch_size")  # fmt: skip
        epoch, counted, started, t0 = 0, 0, False, 0.0
        while counted < images:
            loader.set_epoch(epoch)
            for batch, _, _ in loader:
                if not started:  # the first batch pays for starting the workers
                    started, t0 = True, time.perf_counter()
                    continue
                counted += len(batch)
                if counted >= images:
                    break
            epoch += 1
        # a shard directory may feed fewer workers than asked for
        yield Rate(kind, str(data.root or data.dataset), loader.num_workers, counted, time.perf_counter() - t0)


HEADER = f"{'reader':<8} {'workers':>7} {'img/s':>9} {'img/s per worker':>17}  data"


def format_rate(r: Rate) -> str:
    return f"{r.reader:<8} {r.workers:>7} {r.total:>9.0f} {r.per_worker:>17.0f}  {r.root}"

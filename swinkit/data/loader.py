"""Resumable, exact data loading: the loader the engine iterates, and for map-style datasets (folders, HF datasets,
the digits) a seeded epoch sampler sharded over processes; a collate that skips bad files.

Training: every epoch is a permutation of the dataset drawn from (seed, epoch); its first ``n - n % world``
entries are dealt round-robin to the processes, so with the same global batch, one process and N processes see the
same images in each step. ``set_epoch(epoch, start)`` skips the first ``start`` samples of this process's share,
which is how a run resumes mid-epoch.

Evaluation: the dataset in order, dealt round-robin without padding, so per-process counts summed over processes
equal the single-process count exactly (a DistributedSampler would pad with duplicates).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler

from ..core.errors import DataError
from ..core.signals import ignore_stop_signals
from .datasets import TransformedDataset


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729 + 17) % (2**31 - 1)


class EpochSampler(Sampler):
    """Yields ``(index, augmentation seed)`` keys for one process."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, shuffle: bool = True, seed: int = 0) -> None:
        self.size, self.rank, self.world_size = size, rank, world_size
        self.shuffle, self.seed = shuffle, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
            order = order[: self.size - self.size % self.world_size]
        else:
            order = list(range(self.size))
        return order[self.rank :: self.world_size]

    def __iter__(self):
        for index in self._indices()[self.start :]:
            yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return max(len(self._indices()) - self.start, 0)


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stack the readable samples; return (images, targets, descriptions of the unreadable ones)."""
    good = [(x, t) for x, t, _ in batch if x is not None]
    bad = [msg for x, _, msg in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    images = torch.stack([x for x, _ in good])
    targets = torch.tensor([t for _, t in good], dtype=torch.long)
    return images, targets, bad


class StreamFailure:
    """What a streaming dataset yields instead of a batch when its files cannot be read; ``Loader`` raises it as a
    ``DataError`` in the training process (an exception raised in a loader worker would reach the user as a
    traceback of the worker)."""

    def __init__(self, message: str) -> None:
        self.message = message


class Loader(DataLoader):
    """The DataLoader of every swinkit run. ``set_epoch(epoch, start)`` chooses the epoch before a pass and skips the
    ``start`` samples of it this process has already trained on (a resumed run), for a map-style dataset through
    its ``EpochSampler`` and for a stream of shards through the stream itself. Its workers ignore the stop signals
    (``swinkit.core.signals``): the main process decides when to stop, after the step it is in."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, worker_init_fn=ignore_stop_signals, **kwargs)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        (self.dataset if isinstance(self.dataset, IterableDataset) else self.sampler).set_epoch(epoch, start)

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, StreamFailure):
                raise DataError(batch.message)
            yield batch


def map_loader(
    base,
    transform,
    *,
    batch_size: int,
    train: bool,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
    shuffle: bool = True,
) -> Loader:
    """A loader over a map-style dataset (``load(i)``, ``target(i)``, ``name(i)``): seeded, exact, resumable."""
    return indexed_loader(TransformedDataset(base, transform), collate, batch_size=batch_size, train=train, rank=rank,
                          world_size=world_size, seed=seed, workers=workers, pin_memory=pin_memory,
                          shuffle=shuffle)  # fmt: skip


def indexed_loader(dataset, collate_fn, *, batch_size: int, train: bool, rank: int, world_size: int, seed: int,
                   workers: int, pin_memory: bool, shuffle: bool) -> Loader:  # fmt: skip
    """The ``Loader`` of a dataset indexed by ``EpochSampler`` keys: what ``map_loader`` and the segmentation
    loader share."""
    sampler = EpochSampler(len(dataset), rank, world_size, shuffle=train and shuffle, seed=seed)
    return Loader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        drop_last=train,
        pin_memory=pin_memory,
        persistent_workers=False,
        # Its own generator: creating an iterator must not draw from the global RNG, or a resumed run would differ.
        generator=torch.Generator().manual_seed(seed),
    )

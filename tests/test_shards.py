"""Sharded datasets: `swinkit shard`, the exact stream over processes and workers, resume, evaluation."""

from __future__ import annotations

import json
import logging
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from swinkit.cli import main
from swinkit.core.errors import ConfigError, DataError, DataLayoutError
from swinkit.data import Digits, build_datasets, build_loader, open_shards, write_shards
from swinkit.data.shards import parse_size
from swinkit.engine.config import DataConfig
from swinkit.engine.train import train
from tests.engine_utils import REPO, state_dicts_equal, tiny_config, torchrun


def write_id_folder(root: Path, n_train: int, n_val: int, classes: int = 3) -> Path:
    """An ImageNet-layout folder whose image i carries i in its first pixel (red * 256 + green)."""
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.zeros((4, 4, 3), dtype=np.uint8)
            pixels[0, 0] = (i // 256, i % 256, 0)
            Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    return root


class ReadId:
    """The id a `write_id_folder` image carries, as the 'image' of a sample."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        r, g = np.asarray(img)[0, 0, :2].astype(np.int64)
        return torch.tensor(r * 256 + g)


def write_digit_folder(root: Path, n_train: int = 96, n_val: int = 40) -> Path:
    """The first built-in digits as PNG files in the ImageNet layout."""
    for split, n in (("train", n_train), ("val", n_val)):
        digits = Digits(split)
        for i in range(n):
            folder = root / split / str(digits.target(i))
            folder.mkdir(parents=True, exist_ok=True)
            digits.load(i).save(folder / f"{i:04d}.png")
    return root


def ids(loader, epoch: int, start: int = 0) -> list[int]:
    loader.set_epoch(epoch, start)
    return [int(i) for images, _, _ in loader for i in images]


def folder_ids(root: Path, split: str = "train") -> list[int]:
    """The ids in the folder's own (sorted) order."""
    return [int(p.stem) for c in sorted((root / split).iterdir()) for p in sorted(c.iterdir())]


def data_config(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="auto", root=str(root), **kw)


@pytest.fixture(scope="module")
def id_shards(tmp_path_factory) -> tuple[Path, Path]:
    """96 training images in 8 shards of 12, 10 validation images in 4 shards."""
    tmp = tmp_path_factory.mktemp("ids")
    folder = write_id_folder(tmp / "folder", 96, 10)
    write_shards(folder, str(tmp / "shards"), shard_samples=12)
    info = json.loads((tmp / "shards" / "_info.json").read_text())
    assert info["splits"]["train"]["shard_lengths"] == [12] * 8
    return folder, tmp / "shards"


def test_shard_writes_timms_index_and_the_folders_bytes(id_shards, capsys):
    folder, shards = id_shards
    info = json.loads((shards / "_info.json").read_text())
    assert info["classes"] == ["c0", "c1", "c2"]
    assert info["splits"]["val"] == {"name": "val", "num_samples": 10, "filenames": ["val-000000.tar"],
                                     "shard_lengths": [10]}  # fmt: skip
    with tarfile.open(shards / "train-000000.tar") as tar:
        names = tar.getnames()
        assert names[:2] == ["000000000.cls", "000000000.png"]
        first = sorted((folder / "train" / "c0").iterdir())[0]
        assert tar.extractfile("000000000.png").read() == first.read_bytes()
        assert tar.extractfile("000000000.cls").read() == b"0"
    # timm's own webdataset reader reads the shards
    from timm.data import create_dataset

    ds = create_dataset("wds/ids", root=str(shards), split="val")
    assert sorted(int(ReadId()(img)) for img, _ in ds) == sorted(folder_ids(folder, "val"))
    with pytest.raises(ConfigError, match="exists already"):
        write_shards(folder, str(shards))
    assert main(["shard", "--data", str(folder), "--output", str(shards.parent / "by-size"), "--shard-size",
                 "4KB"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "train: 96 samples in" in out and f"--data {shards.parent / 'by-size'}" in out
    assert len(json.loads((shards.parent / "by-size" / "_info.json").read_text())["splits"]["train"]["filenames"]) > 1
    assert parse_size("1GB") == 10**9 and parse_size("64MiB") == 64 << 20
    with pytest.raises(ConfigError, match="--shard-size"):
        parse_size("big")


def test_unshuffled_shards_give_the_folders_order(id_shards):
    folder, shards = id_shards
    for root in (folder, shards):
        cfg = data_config(root, shuffle=False, workers=0)
        train_set, _ = build_datasets(cfg)
        loader = build_loader(train_set, ReadId(), data=cfg, batch_size=8, train=True)
        assert ids(loader, 0) == folder_ids(folder)


def test_two_processes_with_two_workers_see_every_sample_once_per_epoch(id_shards):
    _, shards = id_shards
    split = open_shards(str(shards), "train")
    cfg = data_config(shards, workers=2, shuffle_buffer=20)
    loaders = [build_loader(split, ReadId(), data=cfg, batch_size=4, train=True, rank=r, world_size=2, seed=3)
               for r in range(2)]  # fmt: skip
    assert [len(loader) for loader in loaders] == [12, 12]
    epochs = []
    for epoch in range(2):
        seen = [i for loader in loaders for i in ids(loader, epoch)]
        assert Counter(seen) == Counter(range(96))  # each sample exactly once
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # shuffled afresh each epoch
    # A resumed epoch continues at the same sample: the batches after the 5th of rank 1 are the same ones.
    full = ids(loaders[1], 1)
    assert ids(loaders[1], 1, start=5 * 4) == full[5 * 4 :]


def test_uneven_shards_say_what_an_epoch_drops_and_repeats(tmp_path, caplog):
    folder = write_id_folder(tmp_path / "folder", 90, 4)
    write_shards(folder, str(tmp_path / "shards"), shard_samples=20)  # 20, 20, 20, 20, 10
    split = open_shards(str(tmp_path / "shards"), "train")
    cfg = data_config(tmp_path / "shards", workers=2)
    with caplog.at_level(logging.WARNING):
        loader = build_loader(split, ReadId(), data=cfg, batch_size=5, train=True, world_size=2)
    dropped, repeated = loader.dataset.coverage(0)
    assert repeated > 0 and f"repeats {repeated} samples and leaves out {dropped}" in caplog.text
    seen = ids(loader, 0) + ids(build_loader(split, ReadId(), data=cfg, batch_size=5, train=True, rank=1,
                                             world_size=2), 0)  # fmt: skip
    assert len(seen) == 90 // 2 // 5 * 5 * 2
    # A stream takes all its samples once before it repeats any: what is left out and what is twice are as said.
    assert len(set(seen)) == 90 - dropped and len(seen) - len(set(seen)) == repeated
    # More workers than a process has shards: fewer workers, said once.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loader = build_loader(split, ReadId(), data=data_config(tmp_path / "shards", workers=8), batch_size=5,
                              train=True, world_size=2)  # fmt: skip
    assert loader.num_workers == 2 and "feed at most 2 loader worker(s)" in caplog.text
    with pytest.raises(DataLayoutError, match="cannot feed 8 processes"):
        build_loader(split, ReadId(), data=cfg, batch_size=5, train=True, world_size=8)


def test_evaluation_from_shards_reads_every_sample_once_over_processes(id_shards, tmp_path):
    folder, shards = id_shards
    write_shards(folder, str(tmp_path / "val"), shard_samples=3, splits=("val",))  # 3, 3, 3, 1
    for root in (shards, tmp_path / "val"):  # one shard of 10 (two processes have none), four shards
        split = open_shards(str(root), "val")
        seen = []
        for rank in range(3):
            loader = build_loader(split, ReadId(), data=data_config(root, workers=2), batch_size=2, train=False,
                                  rank=rank, world_size=3)  # fmt: skip
            batches = [b for b, _, _ in loader]
            assert len(batches) == len(loader)
            seen += [int(i) for b in batches for i in b]
        assert Counter(seen) == Counter(folder_ids(folder, "val"))


def test_broken_and_foreign_shards_give_one_clear_error(id_shards, tmp_path):
    _, shards = id_shards
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "_info.json").write_text((shards / "_info.json").read_text())
    for f in shards.glob("*.tar"):
        (broken / f.name).write_bytes(f.read_bytes())
    data = (broken / "train-000003.tar").read_bytes()
    (broken / "train-000003.tar").write_bytes(data[: len(data) // 2])  # truncated mid-sample
    split = open_shards(str(broken), "train")
    loader = build_loader(split, ReadId(), data=data_config(broken, shuffle=False, workers=2), batch_size=4,
                          train=True)  # fmt: skip
    with pytest.raises(DataError, match="train-000003.tar: (not a readable shard|holds \\d+ samples, the index)"):
        ids(loader, 0)
    huge = tarfile.TarInfo("000000000.png")
    huge.size = 1 << 40  # a header that claims a terabyte, with nothing behind it
    (broken / "train-000003.tar").write_bytes(huge.tobuf())
    with pytest.raises(DataError, match="declares 1099511627776 bytes"):
        ids(loader, 0)
    (broken / "_info.json").write_text("{not json")
    with pytest.raises(DataError, match="_info.json: not JSON"):
        open_shards(str(broken), "train")
    (broken / "_info.json").write_text(json.dumps({"splits": {"train": {"filenames": ["../x.tar"],
                                                                         "shard_lengths": [1]}}}))  # fmt: skip
    with pytest.raises(DataError, match="relative paths"):
        open_shards(str(broken), "train")
    with pytest.raises(DataLayoutError, match="no split 'test'"):
        open_shards(str(shards), "test")
    (tmp_path / "no_index").mkdir()
    with pytest.raises(DataLayoutError, match="no _info.json; write shards with `swinkit shard"):
        open_shards(str(tmp_path / "no_index"), "train")
    with pytest.raises(DataLayoutError, match="train-000008.tar .* is not in _info.json"):
        open_shards(str(shards), "train-{000000..000099}.tar")
    assert len(open_shards(str(shards), "train-{000000..000001}.tar")) == 24  # a brace pattern selects shards


@pytest.fixture(scope="module")
def digit_data(tmp_path_factory) -> tuple[Path, Path]:
    """96 training and 40 validation digits as a folder and as shards of 24 and 10."""
    tmp = tmp_path_factory.mktemp("digits")
    folder = write_digit_folder(tmp / "folder")
    write_shards(folder, str(tmp / "shards"), shard_samples=24)
    return folder, tmp / "shards"


def _weights(run: Path) -> dict:
    return load_file(run / "checkpoints" / "last" / "model.safetensors")


def test_training_from_shards_without_shuffling_equals_the_folder_run(digit_data, tmp_path):
    folder, shards = digit_data
    common = ["data.dataset=auto", "data.shuffle=false", "data.max_train_samples=null", "data.max_val_samples=null"]
    a = train(tiny_config(tmp_path / "folder", *common, f"data.root={folder}"))
    b = train(tiny_config(tmp_path / "shards", *common, f"data.root={shards}"))
    assert state_dicts_equal(_weights(tmp_path / "folder"), _weights(tmp_path / "shards"))
    assert a["val_top1"] == b["val_top1"]


def test_a_run_over_shards_resumed_mid_epoch_ends_bit_identical(digit_data, tmp_path):
    _, shards = digit_data
    common = [f"data.root={shards}", "data.dataset=wds", "data.max_train_samples=null", "data.max_val_samples=null",
              "data.workers=2", "data.shuffle_buffer=16", "train.save_every_steps=0"]  # fmt: skip
    train(tiny_config(tmp_path / "whole", *common))
    train(tiny_config(tmp_path / "cut", *common, "train.stop_after_steps=9"))  # epoch 1 has 12 steps
    train(tiny_config(tmp_path / "cut", *common), resume=str(tmp_path / "cut"))
    assert state_dicts_equal(_weights(tmp_path / "whole"), _weights(tmp_path / "cut"))


def test_evaluation_from_shards_with_two_processes_equals_the_folder(digit_data, tmp_path):
    folder, shards = digit_data
    out = tmp_path / "run"
    train(tiny_config(out, "sched.epochs=1", "data.max_train_samples=48"))
    results = {}
    for name, root in (("folder", folder), ("shards", shards)):
        torchrun("eval", "--checkpoint", str(out / "checkpoints" / "last"), "--data", str(root), "--output",
                 str(tmp_path / name), "data.max_val_samples=null", "data.workers=2", "data.batch_size=7",
                 cwd=REPO)  # fmt: skip
        results[name] = json.loads((tmp_path / name / "eval.json").read_text())
    folder_result, shard_result = results["folder"], results["shards"]
    assert folder_result["n"] == shard_result["n"] == 40
    assert (folder_result["top1"], folder_result["top5"]) == (shard_result["top1"], shard_result["top5"])
    assert shard_result["loss"] == pytest.approx(folder_result["loss"], rel=1e-6)


def test_bench_data_prints_rates_per_worker_and_in_all_for_each_reader(digit_data, capsys):
    folder, shards = digit_data
    assert main(["bench-data", "--data", str(folder), "--data", str(shards), "--workers", "0,2", "--images", "100",
                 "data.batch_size=16"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert "ISA:" in lines[0] and lines[1].split()[:3] == ["reader", "workers", "img/s"]
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [("folder", "0"), ("folder", "2"), ("wds", "0"), ("wds", "2")]
    for _, workers, total, per_worker, _ in rows:
        assert float(total) > 0 and float(per_worker) == pytest.approx(float(total) / max(int(workers), 1), abs=1)
    assert main(["bench-data", "--workers", "x"]) == 2
    assert main(["bench-data", "--data", str(folder), "--images", "0"]) == 2
    assert main(["bench-data", "--data", str(folder), "data.batch_size=1000", "--workers", "0"]) == 2

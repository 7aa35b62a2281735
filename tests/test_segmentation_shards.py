"""Segmentation shards (``swinkit shard`` of a folder of images/ and annotations/): every pair written, the same
scores as the folder, an iteration-scheduled run that resumes to the same weights, bad samples named."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from swinkit.checkpoints.io import read_file
from swinkit.cli import main
from swinkit.data.digit_scenes import DigitScenes
from swinkit.data.label_maps import SegmentationFolder
from swinkit.data.segmentation import Pipeline, segmentation_loader
from swinkit.data.shards import open_shards, write_shards
from swinkit.engine.config import load_config
from swinkit.engine.segmentation_eval import evaluate_segmentation
from swinkit.engine.train import train
from tests.engine_utils import TINY_UPERNET, state_dicts_equal, tiny_upernet

SPLITS = {"train": 12, "val": 5}


def write_folder(root: Path) -> Path:
    """Digit scenes of two sizes in ADE20K's layout (label 0 'other', the scenes' classes shifted up by one)."""
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(["background", *map(str, range(10))]) + "\n")
    for split, count in SPLITS.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        scenes = DigitScenes("train" if split == "train" else "val", length=count, size=32)
        for i in range(count):
            image, labels = scenes.load(i)
            labels = np.asarray(labels) + 1
            if i % 2:  # another size: evaluation batches of one image at its own size
                image, labels = image.resize((48, 32)), np.asarray(Image.fromarray(labels).resize((48, 32), 0))
            image.save(root / "images" / split / f"s{i}.jpg")
            Image.fromarray(labels.astype(np.uint8)).save(root / "annotations" / split / f"s{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("seg-shards")
    folder = write_folder(base / "folder")
    write_shards(folder, str(base / "shards"), shard_samples=3)
    return folder, base / "shards"


def test_shards_hold_every_pair_and_score_like_the_folder(data):
    folder, shards = data
    info = json.loads((shards / "_info.json").read_text())
    assert info["task"] == "segmentation" and info["classes"][0] == "background"
    assert [info["splits"][s]["num_samples"] for s in SPLITS] == list(SPLITS.values())
    val = open_shards(str(shards), "val")
    assert val.task == "segmentation" and val.lengths == (3, 2)
    model, pipeline = tiny_upernet(11), Pipeline(train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    cfg = load_config("upernet_digits", ["seg.scale=null"])
    scored = [evaluate_segmentation(model, segmentation_loader(base, pipeline, batch_size=1, train=False,
                                                               reduce_zero_label=True),
                                    torch.device("cpu"), "fp32", 11, cfg.seg)  # fmt: skip
              for base in (SegmentationFolder(folder, "val", reduce_zero_label=True), val)]
    assert scored[0]["n"] == 5 and json.dumps(scored[0]) == json.dumps(scored[1])  # the same pixels (NaN too)


def _config(shards: Path, out: Path, *extra: str):
    return load_config("upernet_digits", [
        *TINY_UPERNET, "data.dataset=wds", f"data.root={shards}", "seg.reduce_zero_label=true", "seg.scale=null",
        "seg.crop_size=[32,32]", "seg.class_weight=null", "sched.iterations=8", "sched.warmup_iterations=2",
        "train.iterations_per_epoch=4", "data.batch_size=2", f"train.output={out}", *extra,
    ])  # fmt: skip


@pytest.mark.slow
def test_a_run_on_shards_resumes_mid_epoch_to_the_uninterrupted_weights(data, tmp_path):
    _, shards = data
    train(_config(shards, tmp_path / "full"))
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8] and all(0 <= r["val_miou"] <= 100 for r in records)
    train(_config(shards, tmp_path / "cut", "train.stop_after_steps=6"))
    train(_config(shards, tmp_path / "cut"), resume=str(tmp_path / "cut"))
    a, _ = read_file(tmp_path / "full" / "checkpoints" / "last" / "model.safetensors")
    b, _ = read_file(tmp_path / "cut" / "checkpoints" / "last" / "model.safetensors")
    assert state_dicts_equal(a, b)


def _rewrite_member(shard: Path, name: str, data: bytes) -> None:
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for member, content in members:
            content = data if member.name == name else content
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))


@pytest.mark.parametrize("case,expected", [("size", "label map is 8x8 but its image is"),
                                           ("range", "label value 199 is outside the 11 classes")])  # fmt: skip
def test_a_bad_label_map_in_a_shard_is_one_error_naming_the_sample(data, tmp_path, case, expected, capsys):
    folder, _ = data
    shards = tmp_path / "shards"
    write_shards(folder, str(shards), shard_samples=3)
    bad = np.full((8, 8) if case == "size" else (32, 32), 200 if case == "range" else 1, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(bad).save(buffer, format="PNG")
    _rewrite_member(shards / "val-000000.tar", "000000000.seg.png", buffer.getvalue())
    args = ["train", "-c", "upernet_digits", *TINY_UPERNET, "data.dataset=wds", f"data.root={shards}",
            "seg.reduce_zero_label=true", "seg.scale=null", "seg.crop_size=[32,32]", "seg.class_weight=null",
            "sched.iterations=2", "sched.warmup_iterations=0", "train.iterations_per_epoch=2", "--output",
            str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(said) == 1 and expected in said[0] and "val-000000.tar:'000000000' (seg.png)" in said[0], err


def test_classification_and_segmentation_shards_are_not_mixed_up(data, tmp_path):
    from swinkit.core.errors import ConfigError
    from swinkit.data.build import build_datasets, build_segmentation_datasets

    _, shards = data
    cfg = load_config("quickstart", ["data.dataset=wds", f"data.root={shards}"])
    with pytest.raises(ConfigError, match="hold segmentation samples"):
        build_datasets(cfg.data)
    digits = tmp_path / "digits"
    for split in ("train", "val"):
        for label in ("a", "b"):
            (digits / split / label).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(digits / split / label / "x.png")
    write_shards(digits, str(tmp_path / "cls"))
    seg = load_config("upernet_digits", ["data.dataset=wds", f"data.root={tmp_path / 'cls'}"])
    with pytest.raises(ConfigError, match="hold classification samples"):
        build_segmentation_datasets(seg.data, seg.seg)


def test_data_auto_reads_a_segmentation_folder_or_its_shards(data):
    from swinkit.data.build import build_segmentation_datasets
    from swinkit.data.shards import ShardSplit

    folder, shards = data
    for root, kind in ((folder, SegmentationFolder), (shards, ShardSplit)):
        cfg = load_config("upernet_digits", ["data.dataset=auto", f"data.root={root}"])
        train_set, _ = build_segmentation_datasets(cfg.data, cfg.seg)
        assert isinstance(train_set, kind)

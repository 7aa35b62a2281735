"""Segmentation data: folder pairs and their checks, mmseg's pipeline, and the loader's exactness and errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from swinkit.core.errors import DataError, DataLayoutError
from swinkit.data.digit_scenes import DigitScenes
from swinkit.data.label_maps import IGNORE_INDEX, LabelMapError, SegmentationFolder
from swinkit.data.segmentation import Pipeline, rescale, segmentation_loader

RAW = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))  # normalisation that keeps 0..255 pixels


def write_pair(root, split, stem, labels, size=None, mode="L"):
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    h, w = labels.shape
    pixels = np.stack([labels * 10 % 256] * 3, axis=-1).astype(np.uint8)
    Image.fromarray(pixels).resize(size or (w, h)).save(root / "images" / split / f"{stem}.jpg")
    label = Image.fromarray(labels.astype(np.uint8))
    label.convert(mode).save(root / "annotations" / split / f"{stem}.png")


def test_folder_pairs_by_stem_and_reduces_zero_label(tmp_path):
    labels = np.array([[0, 1, 2], [3, 0, 150]])
    write_pair(tmp_path, "training", "a", labels)
    data = SegmentationFolder(tmp_path, "training", reduce_zero_label=True)
    assert len(data) == 1 and len(data.classes) == 150  # ADE20K's classes without a classes.txt
    _, loaded = data.load(0)
    assert loaded.tolist() == [[IGNORE_INDEX, 0, 1], [2, IGNORE_INDEX, 149]]


@pytest.mark.parametrize("case,expected", [
    ("unpaired image", "has no label map"),
    ("unpaired label", "has no image"),
    ("rgb label", "single-channel index map"),
    ("size", "label map is 3x2 but its image is 6x4"),
    ("range", "label value 7 is outside the 3 classes"),
    ("empty", "no images"),
    ("16-bit", "label value 300 does not fit an index map of 8 bits"),
])  # fmt: skip
def test_bad_pairs_name_the_file_and_the_fix(tmp_path, case, expected):
    labels = np.array([[0, 1, 2], [2, 1, 0]])
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    if case == "empty":
        (tmp_path / "images" / "val").mkdir(parents=True)
        (tmp_path / "annotations" / "val").mkdir(parents=True)
    else:
        write_pair(tmp_path, "val", "x", np.where(labels == 2, 7, labels) if case == "range" else labels,
                   size=(6, 4) if case == "size" else None, mode="RGB" if case == "rgb label" else "L")  # fmt: skip
    if case == "16-bit":
        wide = np.array([[0, 300, 2], [2, 1, 0]], dtype=np.uint16)
        Image.fromarray(wide).save(tmp_path / "annotations" / "val" / "x.png")
    if case == "unpaired image":
        (tmp_path / "annotations" / "val" / "x.png").unlink()
    if case == "unpaired label":
        write_pair(tmp_path, "val", "y", labels)
        (tmp_path / "images" / "val" / "x.jpg").unlink()
    with pytest.raises(DataError, match=expected):
        SegmentationFolder(tmp_path, "val").load(0)


def test_training_pipeline_keeps_image_and_labels_aligned_and_pads_with_ignore():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 20, size=(40, 50))
    image = Image.fromarray(np.stack([labels * 10] * 3, axis=-1).astype(np.uint8))
    pipeline = Pipeline(train=True, crop_size=(48, 48), photometric=False, cat_max_ratio=1.0, **RAW)
    for seed in range(6):
        torch.manual_seed(seed)
        random.seed(seed)
        pixels, target = pipeline((image, labels.astype(np.uint8)))
        assert pixels.shape == (3, 48, 48) and target.shape == (48, 48)
        real = target != IGNORE_INDEX
        assert real.sum() == 40 * 48  # the 50-wide image cropped to 48, the 40 rows padded to 48
        assert torch.equal(pixels[0][real].round(), (target[real] * 10).float())


def test_rescale_fits_mmcv_rule():
    assert rescale(torch.zeros(3, 100, 200), (2048, 512)).shape == (3, 512, 1024)
    assert rescale(torch.zeros(300, 100, dtype=torch.long), (2048, 512), nearest=True).shape == (1536, 512)


def test_loader_is_seeded_and_a_bad_label_map_stops_with_its_name(tmp_path):
    scenes = DigitScenes("train", length=8, size=32)
    pipeline = Pipeline(train=True, crop_size=(32, 32), scale=(64, 32), **RAW)
    first = [b for b in segmentation_loader(scenes, pipeline, batch_size=4, train=True, seed=3)]
    again = [b for b in segmentation_loader(scenes, pipeline, batch_size=4, train=True, seed=3)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert first[0][0].shape == (4, 3, 32, 32) and first[0][1].dtype == torch.long

    (tmp_path / "classes.txt").write_text("a\nb\n")
    write_pair(tmp_path, "train", "bad", np.array([[0, 5], [1, 1]]))
    loader = segmentation_loader(SegmentationFolder(tmp_path, "train"), Pipeline(train=False, **RAW), batch_size=1,
                                 train=False)  # fmt: skip
    with pytest.raises(DataError, match=r"bad\.png: label value 5 is outside the 2 classes"):
        next(iter(loader))
    assert issubclass(LabelMapError, DataError) and not issubclass(DataLayoutError, LabelMapError)


@pytest.mark.parametrize("case,expected", [
    ("size", "label map is 3x2 but its image is 6x4"),
    ("range", "label value 7 is outside the 3 classes"),
    ("rgb label", "single-channel index map"),
    ("unpaired image", "has no label map"),
    ("unpaired label", "has no image"),
    ("empty", "no images"),
    ("classes", "model.num_classes=4"),
])  # fmt: skip
def test_the_cli_says_each_bad_pair_in_one_line_and_writes_no_weights(tmp_path, case, expected, capsys):
    from swinkit.cli import main
    from tests.engine_utils import TINY_UPERNET

    labels = np.array([[0, 1, 2], [2, 1, 0]])
    (tmp_path / "data" / "classes.txt").parent.mkdir()
    (tmp_path / "data" / "classes.txt").write_text("a\nb\nc\n")
    for split, stem in (("train", "x"), ("val", "x"), ("val", "y")):
        write_pair(tmp_path / "data", split, stem, labels)
    bad = dict(size=dict(size=(6, 4)), range=dict(labels=np.where(labels == 2, 7, labels)),
               **{"rgb label": dict(mode="RGB")}).get(case)  # fmt: skip
    if bad is not None:
        write_pair(tmp_path / "data", "val", "x", **{"labels": labels, **bad})
    if case == "unpaired image":
        (tmp_path / "data" / "annotations" / "val" / "x.png").unlink()
    if case == "unpaired label":
        (tmp_path / "data" / "images" / "val" / "x.jpg").unlink()
    if case == "empty":
        for folder in ("images", "annotations"):
            for f in (tmp_path / "data" / folder / "val").iterdir():
                f.unlink()
    out = tmp_path / "run"
    args = ["train", "-c", "upernet_digits", *TINY_UPERNET, "data.dataset=segmentation",
            f"data.root={tmp_path / 'data'}", "seg.scale=null", "seg.crop_size=[32,32]", "seg.class_weight=null",
            "sched.iterations=2", "sched.warmup_iterations=0", "train.iterations_per_epoch=2",
            *(["model.num_classes=4"] if case == "classes" else []), "--output", str(out)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "error" in line.lower()]  # besides the progress bar
    assert len(said) == 1 and said[0].startswith("swinkit train: error:") and expected in said[0], err
    assert "Traceback" not in err
    if case not in ("classes", "empty"):
        assert "/x." in said[0]  # the file
    assert not list(out.rglob("model.safetensors"))


def test_mmsegs_img_dir_ann_dir_layout_reads_and_shards_like_ade20ks(tmp_path):
    from swinkit.data.shards import open_shards, write_shards

    labels = np.array([[0, 1, 2], [2, 1, 0]])
    write_pair(tmp_path / "ade", "train", "x", labels)
    mmseg = tmp_path / "mmseg"
    (tmp_path / "ade" / "images").rename(tmp_path / "ade" / "img_dir")
    (tmp_path / "ade" / "annotations").rename(tmp_path / "ade" / "ann_dir")
    (tmp_path / "ade").rename(mmseg)
    (mmseg / "classes.txt").write_text("a\nb\nc\n")
    folder = SegmentationFolder(mmseg, "train")
    assert folder.classes == ["a", "b", "c"] and folder.load(0)[1].tolist() == labels.tolist()
    write_shards(mmseg, str(tmp_path / "shards"), splits=("train",))
    assert open_shards(str(tmp_path / "shards"), "train").task == "segmentation"
    with pytest.raises(DataLayoutError, match="or img_dir/val/ and ann_dir/val/"):
        SegmentationFolder(mmseg, "val")

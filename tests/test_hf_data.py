"""Hugging Face image datasets (data.dataset=hf): a save_to_disk directory and a parquet directory in the Hub's split
layout train like the folder they were made from."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file

from swinkit.core.errors import DataLayoutError
from swinkit.data import build_datasets, dataset_kind, imagenet_folders
from swinkit.engine.config import DataConfig
from swinkit.engine.train import train
from tests.engine_utils import state_dicts_equal, tiny_config
from tests.test_shards import write_digit_folder

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def hf_data(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The digits as a folder, as a save_to_disk DatasetDict (train/val) and as parquet files (train/validation)."""
    tmp = tmp_path_factory.mktemp("hf")
    folder = write_digit_folder(tmp / "folder")
    train_set, val_set = imagenet_folders(folder)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=train_set.classes)})

    def split(ds):  # the images' bytes in the rows, as the Hub stores them (a row's path names no file here)
        images = [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p, _ in ds.samples]
        return datasets.Dataset.from_dict({"image": images, "label": [t for _, t in ds.samples]}, features=features)

    saved = datasets.DatasetDict({"train": split(train_set), "val": split(val_set)})
    saved.save_to_disk(str(tmp / "saved"))
    (tmp / "parquet" / "data").mkdir(parents=True)
    split(train_set).to_parquet(str(tmp / "parquet" / "data" / "train-00000-of-00001.parquet"))
    split(val_set).to_parquet(str(tmp / "parquet" / "data" / "validation-00000-of-00001.parquet"))
    return folder, tmp / "saved", tmp / "parquet"


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def test_hf_datasets_are_found_and_read_with_the_folders_pixels(hf_data):
    folder, saved, parquet = hf_data
    assert dataset_kind("auto", str(saved)) == "hf" and dataset_kind("auto", str(folder)) == "folder"
    ref_train, ref_val = build_datasets(DataConfig(dataset="folder", root=str(folder)))
    for root in (saved, parquet):
        train_set, val_set = build_datasets(DataConfig(dataset="hf", root=str(root)))  # val -> validation
        assert train_set.classes == ref_train.classes and len(val_set) == len(ref_val) == 40
        for i in (0, 17, 95):
            assert train_set.target(i) == ref_train.target(i)
            assert train_set.load(i).tobytes() == ref_train.load(i).tobytes()
    with pytest.raises(DataLayoutError, match="no split 'test' .*train, val"):
        build_datasets(DataConfig(dataset="hf", root=str(saved), val_split="test"))


def test_training_from_an_hf_dataset_equals_the_folder_run(hf_data, tmp_path):
    folder, saved, parquet = hf_data
    common = ["data.shuffle=true", "data.max_train_samples=null", "data.max_val_samples=null"]
    a = train(tiny_config(tmp_path / "folder", *common, "data.dataset=folder", f"data.root={folder}"))
    b = train(tiny_config(tmp_path / "hf", *common, "data.dataset=auto", f"data.root={saved}", "data.workers=2"))
    c = train(tiny_config(tmp_path / "parquet", *common, "data.dataset=hf", f"data.root={parquet}"))
    weights = [load_file(tmp_path / r / "checkpoints" / "last" / "model.safetensors")
               for r in ("folder", "hf", "parquet")]  # fmt: skip
    assert state_dicts_equal(weights[0], weights[1]) and state_dicts_equal(weights[0], weights[2])
    assert a["val_top1"] == b["val_top1"] == c["val_top1"]


def test_an_hf_segmentation_dataset_scores_like_its_folder_and_names_a_bad_row(tmp_path):
    import json

    import torch

    from swinkit.core.errors import DataError
    from swinkit.data.build import build_segmentation_datasets
    from swinkit.data.label_maps import SegmentationFolder
    from swinkit.data.segmentation import Pipeline, segmentation_loader
    from swinkit.engine.config import load_config
    from swinkit.engine.segmentation_eval import evaluate_segmentation
    from tests.engine_utils import tiny_upernet
    from tests.test_segmentation_shards import write_folder

    folder = write_folder(tmp_path / "folder")
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image(),
                                  "scene_category": datasets.Value("int64")})  # scene_parse_150's columns
    rows = {split: SegmentationFolder(folder, split).pairs for split in ("train", "val")}

    def split(pairs):
        return datasets.Dataset.from_dict({
            "image": [{"bytes": Path(i).read_bytes(), "path": None} for i, _ in pairs],
            "annotation": [{"bytes": Path(a).read_bytes(), "path": None} for _, a in pairs],
            "scene_category": [0] * len(pairs),
        }, features=features)  # fmt: skip

    datasets.DatasetDict({s: split(p) for s, p in rows.items()}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "saved" / "classes.txt").write_text((folder / "classes.txt").read_text())
    cfg = load_config("upernet_digits", ["data.dataset=hf", f"data.root={tmp_path / 'saved'}", "seg.scale=null",
                                         "seg.reduce_zero_label=true"])  # fmt: skip
    train_set, val_set = build_segmentation_datasets(cfg.data, cfg.seg)
    assert len(train_set) == 12 and val_set.column == "annotation" and val_set.classes[0] == "background"
    model, pipeline = tiny_upernet(11), Pipeline(train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    scored = [evaluate_segmentation(model, segmentation_loader(base, pipeline, batch_size=1, train=False),
                                    torch.device("cpu"), "fp32", 11, cfg.seg)  # fmt: skip
              for base in (SegmentationFolder(folder, "val", reduce_zero_label=True), val_set)]
    assert scored[0]["n"] == 5 and json.dumps(scored[0]) == json.dumps(scored[1])
    Image.new("L", (8, 8)).save(tmp_path / "small.png")  # a label map that is not its image's size
    bad = split([(rows["val"][0][0], tmp_path / "small.png")])
    datasets.DatasetDict({"train": bad, "val": bad}).save_to_disk(str(tmp_path / "bad"))
    bad_cfg = load_config("upernet_digits", ["data.dataset=hf", f"data.root={tmp_path / 'bad'}"])
    with pytest.raises(DataError, match=r"bad\[val\]\[0\] \(annotation\): label map is 8x8 but its image is"):
        build_segmentation_datasets(bad_cfg.data, bad_cfg.seg)[1].load(0)

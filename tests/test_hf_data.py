"""Hugging Face image datasets (data.dataset=hf): a save_to_disk directory and a parquet directory in the Hub's split
layout train like the folder they were made from."""

from __future__ import annotations

from pathlib import Path

import pytest
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

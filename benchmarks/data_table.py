"""The data-loading table (docs/data.md includes its output): `swinkit bench-data`'s measurement for the folder, shard
and Hugging Face readers on the built-in digits (the quick start's pipeline) and on ImageNet-like JPEGs (500x375,
Swin-T's 224 px recipe: RandAugment, random erasing), then swinkit's JPEG decoding (PIL) against torchvision's
``decode_jpeg``.

    python benchmarks/data_table.py [--images 1500] [--output benchmarks/data_results.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from swinkit.core.machine import describe
from swinkit.data import Digits, imagenet_folders, write_shards
from swinkit.data.datasets import decode_image
from swinkit.engine.config import apply_overrides, load_config
from swinkit.tools.bench_data import measure_loaders


def compare_jpeg_decoding(folder: Path, rounds: int = 5) -> dict:
    """swinkit's decoder (PIL) against torchvision's ``decode_jpeg`` (to a PIL image, which the timm transforms
    take), alternating over the same files: img/s of each and whether every pixel agrees."""
    import warnings

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision are deprecated")
    files = [p.read_bytes() for p in sorted(folder.rglob("*.JPEG"))[:64]]

    def tv(data: bytes) -> Image.Image:
        pixels = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return Image.fromarray(pixels.permute(1, 2, 0).numpy())

    def pil(data: bytes) -> Image.Image:
        return decode_image(data, "bench")

    same = all(np.array_equal(np.asarray(pil(d)), np.asarray(tv(d))) for d in files)
    seconds = {"PIL": 0.0, "torchvision": 0.0}
    for _ in range(rounds):
        for name, decode in (("PIL", pil), ("torchvision", tv)):
            t0 = time.perf_counter()
            for data in files:
                decode(data)
            seconds[name] += time.perf_counter() - t0
    return {"images": len(files), "same_pixels": same, **{k: rounds * len(files) / v for k, v in seconds.items()}}


def write_digits(root: Path) -> None:
    for split in ("train", "val"):
        digits = Digits(split)
        for i in range(len(digits)):
            folder = root / split / str(digits.target(i))
            folder.mkdir(parents=True, exist_ok=True)
            digits.load(i).save(folder / f"{i:04d}.png")


def write_jpegs(root: Path, n_train: int, n_val: int, classes: int = 10) -> None:
    """Smooth random photographs-to-be (upsampled noise), 500x375, JPEG quality 90, as ImageNet's files are."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            small = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
            small.resize((500, 375), Image.BICUBIC).save(folder / f"{i:05d}.JPEG", quality=90)


def write_hf(folder: Path, out: Path) -> None:
    import datasets

    train, val = imagenet_folders(folder)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=train.classes)})

    def split(ds):
        return datasets.Dataset.from_dict({"image": [p for p, _ in ds.samples], "label": [t for _, t in ds.samples]},
                                          features=features)  # fmt: skip

    datasets.DatasetDict({"train": split(train), "val": split(val)}).save_to_disk(str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1500, help="images timed per measurement")
    parser.add_argument("--output", default="benchmarks/data_results.md")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    lines = [
        f"Measured {datetime.date.today()} on {describe()}, by `python benchmarks/data_table.py` "
        f"(`swinkit bench-data`), {args.images} images per row, one training process.",
        "",
        "| data | pipeline | reader | workers | img/s | img/s per worker |",
        "|---|---|---|---|---|---|",
    ]
    decoding = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = []
        write_digits(tmp / "digits")
        sets.append(("digits (8x8 PNG)", "quickstart: 32 px crop", "quickstart", [], tmp / "digits", 180))
        write_jpegs(tmp / "jpeg", 1024, 64)
        sets.append(("JPEG 500x375", "Swin-T: 224 px, RandAugment, erasing", "swin_tiny_patch4_window7_224",
                     ["data.batch_size=64"], tmp / "jpeg", 64))  # fmt: skip
        for name, pipeline, recipe, overrides, folder, per_shard in sets:
            write_shards(folder, str(folder.with_name(folder.name + "-shards")), shard_samples=per_shard)
            write_hf(folder, folder.with_name(folder.name + "-hf"))
            base = load_config(recipe, overrides)
            for root in (folder, folder.with_name(folder.name + "-shards"), folder.with_name(folder.name + "-hf")):
                cfg = apply_overrides(base, ["data.dataset=auto", f"data.root={root}"])
                for r in measure_loaders(cfg, sorted({1, cores}), args.images):
                    lines.append(f"| {name} | {pipeline} | {r.reader} | {r.workers} | {r.total:.0f} | "
                                 f"{r.per_worker:.0f} |")  # fmt: skip
                    print(lines[-1], flush=True)
            if recipe != "quickstart":
                decoding = compare_jpeg_decoding(folder)
    if decoding:
        lines += ["", f"JPEG decoding of {decoding['images']} 500x375 files, one core: PIL (swinkit's) "
                  f"{decoding['PIL']:.0f} img/s, torchvision `decode_jpeg` {decoding['torchvision']:.0f} img/s "
                  f"({decoding['torchvision'] / decoding['PIL']:.2f}x); identical pixels: "
                  f"{'yes' if decoding['same_pixels'] else 'NO'}."]  # fmt: skip
    table = "\n".join(lines) + "\n"
    Path(args.output).write_text(table)
    print(table)


if __name__ == "__main__":
    main()

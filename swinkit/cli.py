"""The ``swinkit`` command line: one subcommand per job, each parsing its flags and calling one library function."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from .core import remote
from .core.errors import ConfigError, RunNotFoundError


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]], markdown: bool, widths: tuple[int, ...]) -> None:
    """Rows as a markdown table (first column as code) or as aligned text (negative width: left-aligned)."""
    if markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(row)) + " |")
        return
    for row in (header, *rows):
        cells = [f"{cell:<{-w}}" if w < 0 else f"{cell:>{w}}" for cell, w in zip(row, widths, strict=False)]
        print(" ".join(cells) + "  " + row[-1])


METRICS = {"classification": "top-1", "segmentation": "mIoU", "detection": "box/mask AP"}


def _score(task: str, record, as_published: bool = False) -> str:
    """A model's published score as the models table shows it, or a tag's as published (``as_published``)."""
    if task == "detection":
        box, mask = record.box_ap, record.mask_ap
        return "-" if box is None else f"{box:.1f}/{mask:.1f}" if mask is not None else f"{box:.1f}"
    score = record.miou if task == "segmentation" else record.top1
    if score is None:
        return "-"
    return f"{score:g}" if as_published else f"{score:.2f}" if task == "segmentation" else f"{score:.1f}"


def _print_weights(names: list[str], markdown: bool, task: str) -> None:
    from .hub import default_tag, list_weights

    rows = []
    for name in names:
        default = default_tag(name)
        for w in list_weights(name):
            h, wd = w.img_size
            rows.append((
                w.name, "yes" if w.tag == default else "", w.origin, w.label_set, f"{h}" if h == wd else f"{h}x{wd}",
                f"{w.crop_pct:.3g}", w.interpolation, _score(task, w, as_published=True), w.source,
            ))  # fmt: skip
    metric = METRICS[task]
    header = ("weights", "default", "origin", "labels", "img size", "crop", "interp.", metric, "source")
    _print_table(header, rows, markdown, (-48, -7, -11, -12, 8, 5, -8, 6))


def cmd_models(args: argparse.Namespace) -> int:
    from . import models
    from .models import zoo_stats

    names = models.list_models(args.pattern, task=args.task)
    if not names:
        print(f"no {args.task} model matches {args.pattern!r}", file=sys.stderr)
        return 1
    if args.pretrained:
        _print_weights(names, args.markdown, args.task)
        return 0
    rows = []
    for name in names:
        info = models.model_info(name)
        params, macs = zoo_stats.stats(name)
        h, w = info.img_size
        size = f"{h}" if h == w else f"{h}x{w}"
        rows.append(
            (
                name,
                f"{params / 1e6:.2f}",
                f"{macs / 1e9:.2f}",
                size,
                str(info.num_classes),
                _score(args.task, info),
                ", ".join(info.aliases),
            )
        )
    macs = "GMACs" if args.task != "detection" else "GMACs*"
    header = ("model", "params (M)", macs, "img size", "classes", METRICS[args.task], "aliases")
    _print_table(header, rows, args.markdown, (-42, 10, 8, 9, 7, 6))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .hub import fetch, get_weights

    for name in args.names:
        weights = get_weights(name)
        print(f"{weights.name}\t{fetch(weights)}")
    return 0


def _config(args: argparse.Namespace, base=None):
    """The config of ``--config`` (or ``base``, a stored run config) with ``--data``, ``--output`` and overrides."""
    from .engine.config import apply_overrides, load_config

    overrides = list(args.overrides)
    if getattr(args, "data", None):  # first, so that a data.dataset=... of the command line still wins
        overrides = ["data.dataset=auto", f"data.root={args.data}", *overrides]
    if getattr(args, "output", None):
        overrides.append(f"train.output={args.output}")
    return apply_overrides(base, overrides) if base is not None else load_config(args.config, overrides)


def _resume_config(args: argparse.Namespace) -> None:
    """``--resume RUN_DIR`` continues with the run's own resolved config unless another one is given. A run on object
    storage (``--resume s3://...``) is first copied into ``--output``, a new local directory, and continues there."""
    if args.resume and remote.is_remote(args.resume):
        args.resume = str(_copy_run(args.resume, args.output))
        args.output = None
    if args.resume and args.config is None:
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise RunNotFoundError(f"--resume {args.resume}: not a swinkit run directory (it has no config.yaml); give "
                                   "the directory a run was trained into (its --output)")  # fmt: skip
        args.config = str(saved)


def _copy_run(url: str, output: str | None) -> Path:
    import shutil

    from .core.atomic import write_dir
    from .hub import local_file
    from .hub.download import HASH_SUFFIX, VERSION_SUFFIX

    if not output or remote.is_remote(output):
        raise ConfigError(f"--resume {url}: a run continues in a local directory; add --output DIR (a new one) to "
                          "copy it into")  # fmt: skip
    if Path(output).exists():
        raise ConfigError(f"--resume {url} --output {output}: {output} exists already; give a new directory")
    copied = local_file(url)
    if not (copied / "config.yaml").is_file():
        raise RunNotFoundError(f"--resume {url}: not a swinkit run directory (it has no config.yaml); give the "
                               "directory a run was trained into, copied up whole")  # fmt: skip
    skip = shutil.ignore_patterns(f"*{HASH_SUFFIX}", f"*{VERSION_SUFFIX}")
    write_dir(output, lambda tmp: shutil.copytree(copied, tmp, ignore=skip, dirs_exist_ok=True))  # whole or not at all
    logging.getLogger(__name__).info("copied %s to %s; the run continues there", url, output)
    return Path(output)


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.train import train

    _resume_config(args)
    train(_config(args), resume=args.resume)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .engine.pretrain import pretrain

    _resume_config(args)
    if args.config is None:
        raise ConfigError("--config is required (e.g. -c moby_quickstart or -c simmim_quickstart)")
    pretrain(_config(args), resume=args.resume)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .deploy.eval_checkpoint import run_eval
    from .engine.checkpoint import STATE_FILE, stored_config
    from .hub import local_file

    args.checkpoint = str(local_file(args.checkpoint, exclude=(STATE_FILE,)))  # s3://... is copied into the cache once
    # The run's own config (stored beside or inside the checkpoint) unless --config names another.
    base = stored_config(args.checkpoint) if args.config is None else None
    output, args.output = args.output, None
    run_eval(_config(args, base), args.checkpoint, output=output, precision=args.precision, compile=args.compile)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .engine.plan import plan

    result = plan(_config(args), args.nproc, args.parallel)
    print(result)
    if args.gpu_memory is None:
        return 0
    need, have = result.total / 2**30, args.gpu_memory
    if result.fits(have):
        print(f"fits in {have:g} GiB per GPU ({have - need:.2f} GiB to spare)")
        return 0
    print(f"does not fit in {have:g} GiB per GPU ({need:.2f} GiB needed): lower data.batch_size, set "
          "model.grad_checkpointing=true, shard with --parallel fsdp, or use more GPUs")  # fmt: skip
    return 1


def cmd_shard(args: argparse.Namespace) -> int:
    from .data.shards import parse_size, write_shards

    splits = tuple(s for s in args.splits.split(",") if s)
    if args.shard_samples is not None and args.shard_samples < 1:
        raise ConfigError(f"--shard-samples {args.shard_samples}: a shard holds at least one sample")
    info = write_shards(args.data, args.output, shard_bytes=parse_size(args.shard_size),
                        shard_samples=args.shard_samples, splits=splits)  # fmt: skip
    for split, table in info["splits"].items():
        lengths = table["shard_lengths"]
        print(f"{split}: {table['num_samples']} samples in {len(lengths)} shard(s) of {min(lengths)}-{max(lengths)} "
              f"-> {args.output}")  # fmt: skip
    print(f"train with: swinkit train -c CONFIG --data {args.output}")
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from .engine.config import list_configs, resolve_config_path

    for name in list_configs():
        first = resolve_config_path(name).read_text().splitlines()[0].lstrip("# ")
        print(f"{name:<48} {first}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .engine.plot import plot_metrics

    print(plot_metrics(args.run_dir, args.output))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .deploy import convert

    print(convert(args.src, args.dst, args.model, from_format=args.from_format, to_format=args.to_format,
                  label_map=args.label_map, layout=args.layout))  # fmt: skip
    return 0


def _weights(args: argparse.Namespace) -> bool | str | None:
    """``--pretrained`` (the default tag) or ``--weights TAG_OR_PATH_OR_URL``."""
    if args.pretrained and args.weights:
        raise ConfigError("give --pretrained (the default tag) or --weights TAG_OR_PATH_OR_URL, not both")
    return args.weights or (True if args.pretrained else None)


def _add_weights_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretrained", action="store_true",
                   help="load the model's default published weights (`swinkit models --pretrained`)")  # fmt: skip
    p.add_argument("--weights", metavar="TAG_OR_PATH_OR_URL",
                   help="other weights: a tag (e.g. in22k), MODEL.TAG, a local file or an http(s) URL")  # fmt: skip


def cmd_export(args: argparse.Namespace) -> int:
    from .deploy import export

    if args.calibrate_images is not None and args.calibrate is None:
        raise ConfigError("--calibrate-images N counts images of --calibrate DIR: give the folder too")
    size = None if args.img_size is None else tuple(args.img_size) * (2 // len(args.img_size))
    print(export(args.model, args.output, format=args.format, checkpoint=args.checkpoint, img_size=size,
                 dynamic_batch=args.dynamic_batch, dynamic_size=args.dynamic_size, weights=_weights(args),
                 quantize=args.quantize, calibrate=args.calibrate,
                 **({} if args.calibrate_images is None else {"calibrate_images": args.calibrate_images})))  # fmt: skip
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from .deploy import predict

    results = predict(args.model, args.checkpoint, args.images, topk=args.topk, weights=_weights(args),
                      precision=args.precision or "fp32", compile=args.compile, output=args.output,
                      threshold=args.threshold)  # fmt: skip
    for result in results:
        if "error" in result:
            print(f"swinkit predict: error: {result['image']}: {result['error']}", file=sys.stderr)
        elif args.json:
            continue
        elif "drawing" in result:  # a detector: the drawing and each detection
            print(f"{result['image']} -> {result['drawing']}: {len(result['detections'])} detection(s)")
            for found in result["detections"]:
                box = ", ".join(f"{v:.1f}" for v in found["box"])
                print(f"  {found['score']:.2f}  {found['class']:<12}  [{box}]")
        elif "overlay" in result:  # a segmentation model: the files it wrote and the largest classes
            print(f"{result['image']} -> {result['labels']}, {result['overlay']}")
            for label, share in list(result["classes"].items())[: args.topk]:
                print(f"  {share:7.2%}  {label}")
        else:
            print(result["image"])
            for top in result["top"]:
                print(f"  {top['probability']:7.2%}  {top['index']:>5}  {top['label']}")
    if args.json:
        print(json.dumps(results, indent=1))
    return 2 if any("error" in r for r in results) else 0  # each failed input had its own error line


def cmd_bench_data(args: argparse.Namespace) -> int:
    from .core.machine import describe
    from .engine.config import apply_overrides, load_config
    from .tools.bench_data import HEADER, format_rate, measure_loaders

    try:
        workers = [int(w) for w in args.workers.split(",") if w]
    except ValueError:
        raise ConfigError(f"--workers {args.workers!r}: give comma-separated counts, e.g. 0,1,4") from None
    if not workers or min(workers) < 0:
        raise ConfigError(f"--workers {args.workers!r}: give counts of 0 or more")
    if args.images < 1:
        raise ConfigError(f"--images {args.images}: time at least one image")
    base = load_config(args.config, list(args.overrides))
    configs = [apply_overrides(base, ["data.dataset=auto", f"data.root={d}"]) for d in args.data] or [base]
    print(describe())
    print(HEADER)
    for cfg in configs:
        for rate in measure_loaders(cfg, workers, args.images):
            print(format_rate(rate), flush=True)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .tools.benchmark import format_report, report_json, run_benchmark

    against = tuple(a for a in args.against.split(",") if a)
    report = run_benchmark(
        args.model, batch_size=args.batch_size, img_size=args.img_size, dtype=args.dtype, mode=args.mode,
        compile=args.compile, against=against, rounds=args.rounds, measure_memory=not args.no_memory,
    )  # fmt: skip
    if not args.json:
        print(
            "allocator:", "glibc default" if args.default_allocator else "freed memory kept for reuse (swinkit.runtime)"
        )
    print(report_json(report) if args.json else format_report(report))
    return 0


def _add_inference_flags(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16", "int8"),
                   help=f"inference precision; auto: bf16 where the hardware has it natively, else fp32; int8: "
                        f"int8 GEMMs through oneDNN on the CPU ({default_help})")  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="torch.compile with freezing: faster after a first call that compiles (about a minute)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swinkit", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list models with parameter counts and default image size")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'swinv2*'")
    p.add_argument("--markdown", action="store_true", help="print a markdown table (the README's model zoo)")
    p.add_argument("--pretrained", action="store_true", help="list the published weights (tags) instead")
    p.add_argument("--task", choices=("classification", "segmentation", "detection"), default="classification",
                   help="which models: classifiers (top-1), segmentation models (ADE20K mIoU) or detectors (COCO "
                   "box/mask AP; *GMACs of the backbone and FPN)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("download", help="fetch published weights ahead of time (for air-gapped machines)")
    p.add_argument("names", nargs="+", metavar="MODEL[.TAG]", help="e.g. swinv2_tiny_window8_256, cswin_tiny_224.in1k")
    p.set_defaults(func=cmd_download)

    overrides_help = "dotted config overrides, e.g. optim.lr=1e-3 sched.epochs=10"
    for name, func, help_, config_help, data_help in [
        ("train", cmd_train, "train a model; with no arguments, the quick start on the built-in digits",
         "recipe name (`swinkit configs`) or YAML file; default: quickstart",
         "the data: an ImageNet-layout folder (DIR/train/<class>/*, DIR/val/<class>/*), a shard directory "
         "(`swinkit shard`), a Hugging Face dataset, or their URL (s3://..., hf://datasets/...)"),
        ("pretrain", cmd_pretrain, "self-supervised pretraining (MoBY, SimMIM) with a kNN monitor each epoch",
         "recipe name (e.g. moby_quickstart, simmim_quickstart) or YAML",
         "the data, as for train (its labels feed the kNN monitor only)"),
    ]:  # fmt: skip
        p = sub.add_parser(name, help=help_)
        p.add_argument("-c", "--config", help=config_help)
        p.add_argument("--data", help=data_help)
        p.add_argument("--output", help="run directory (default: runs/<config name>, or runs/<config name>-N if taken)")
        p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last")
        p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
        p.set_defaults(func=func)

    p = sub.add_parser("eval", help="top-1/top-5 of a checkpoint on the validation set; writes eval.json")
    p.add_argument("-c", "--config", help="recipe name or YAML file (default: the checkpoint's config.yaml)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint directory (RUN_DIR/checkpoints/best) or file")
    p.add_argument("--data", help="the data, as for train (its val split is evaluated)")
    p.add_argument("--output", help="directory for eval.json (default: the checkpoint directory)")
    _add_inference_flags(p, "default: the run's train.precision under autocast, as it validated during training")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plan", help="memory per GPU of one training step, estimated without allocating it")
    p.add_argument("-c", "--config", help="recipe name or YAML file (default: quickstart)")
    p.add_argument("--nproc", type=int, default=1, help="GPUs (processes) in all")
    p.add_argument("--parallel", choices=("ddp", "fsdp"), help="default: the config's train.parallel")
    p.add_argument("--gpu-memory", type=float, metavar="GIB", help="say whether the step fits in this much per GPU")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("shard", help="write an ImageNet-layout or segmentation folder as webdataset tar shards")
    p.add_argument("--data", required=True, help="dataset directory in ImageNet layout (DIR/train/<class>/*, ...) or "
                   "a segmentation folder (DIR/images/<split>/*, DIR/annotations/<split>/*.png)")
    p.add_argument("--output", required=True, help="new directory, or a URL (s3://bucket/prefix) to upload to")
    p.add_argument("--shard-size", default="1GB", help="close a shard at this size (default: 1GB)")
    p.add_argument("--shard-samples", type=int, metavar="N", help="close a shard at N samples (evenly sized shards)")
    p.add_argument("--splits", default="train,val",
                   help="comma-separated splits to write (default: train,val; ADE20K: training,validation)")
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("configs", help="list the shipped recipes")
    p.set_defaults(func=cmd_configs)

    p = sub.add_parser("plot", help="draw RUN_DIR/curves.png from RUN_DIR/metrics.jsonl")
    p.add_argument("run_dir")
    p.add_argument("--output", help="image path (default: RUN_DIR/curves.png)")
    p.set_defaults(func=cmd_plot)

    model_help = "registered model name; not needed for a checkpoint a swinkit run wrote (its config names it)"
    from .core.layout_names import DENSE_LAYOUT_NAMES, WRITE_FORMATS
    from .core.layout_names import FORMATS as READ_FORMATS

    p = sub.add_parser("convert", help="convert a checkpoint between layouts (timm, official, HF, MindSpore, ...)")
    p.add_argument("src", help="checkpoint to read (.pth/.pt/.bin, .safetensors, .ckpt, .pdparams), or MODEL.TAG")
    p.add_argument("dst", help="file to write (.safetensors, .pth; .ckpt for --to mindspore, .pdparams for paddle)")
    p.add_argument("--model", help=model_help)
    p.add_argument("--from", dest="from_format", default="auto", choices=(*READ_FORMATS, *DENSE_LAYOUT_NAMES),
                   help="source layout")  # fmt: skip
    p.add_argument("--to", dest="to_format", default="swinkit", choices=(*WRITE_FORMATS, *DENSE_LAYOUT_NAMES),
                   help="target layout (mmseg: an UperNet's, mmdet: a detector's)")  # fmt: skip
    p.add_argument("--label-map", help="class map file (line i = source class of target class i), or a built-in name")
    p.add_argument("--layout", choices=["mindcv", "modelzoo"], help="MindSpore names for --to mindspore")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="export to ONNX, TorchScript or torch.export and check it against PyTorch")
    p.add_argument("--model", help=model_help)
    p.add_argument("--checkpoint", help="weights to load (any layout); random weights without")
    _add_weights_flags(p)
    p.add_argument("--format", required=True, choices=["onnx", "torchscript", "exported-program"])
    p.add_argument("--output", required=True, help="file to write")
    p.add_argument("--img-size", type=int, nargs="+", metavar="N", help="H [W] (default: the model's size)")
    p.add_argument("--dynamic-batch", action="store_true", help="let the batch size vary")
    p.add_argument("--dynamic-size", action="store_true",
                   help="let the image size vary (onnx, exported-program; Swin V1/V2): from --img-size up, multiples "
                        "of 32")  # fmt: skip
    p.add_argument("--quantize", choices=["int8"],
                   help="an int8 ONNX graph through ONNX Runtime: dynamic, or static with --calibrate")  # fmt: skip
    p.add_argument("--calibrate", metavar="DIR",
                   help="quantize statically, with activation ranges calibrated on images from DIR (any depth), "
                        "preprocessed as for evaluation")  # fmt: skip
    p.add_argument("--calibrate-images", type=int, metavar="N",
                   help="how many images of DIR to calibrate on, a seeded random choice (default: 256)")  # fmt: skip
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="top-k classes of images with the model's own preprocessing")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", help=model_help)
    p.add_argument("--checkpoint", help="weights (file or training checkpoint directory)")
    _add_weights_flags(p)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--output", default="predictions", metavar="DIR",
                   help="segmentation models and detectors: where each image's label map and overlay PNG, or its "
                   "drawing, go (default: predictions)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="detectors: the least score of a detection drawn and listed (default: 0.5)")
    _add_inference_flags(p, "default: fp32")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("bench-data", help="images/s of a config's training data pipeline, per loader worker and in all")
    p.add_argument("-c", "--config", help="recipe name or YAML file (default: quickstart)")
    p.add_argument("--data", action="append", default=[], metavar="DIR_OR_URL",
                   help="a folder, shard directory or HF dataset; repeat to compare readers (default: the config's)")
    p.add_argument("--workers", default=f"1,{os.cpu_count() or 1}", help="comma-separated loader worker counts")
    p.add_argument("--images", type=int, default=2000, help="images timed per measurement")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    p.set_defaults(func=cmd_bench_data)

    p = sub.add_parser("benchmark", help="img/s, memory and FLOP utilisation against timm, torchvision and HF")
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--img-size", type=int, help="default: the model's")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16", "int8"), default="fp32",
                   help="inference: the weights in this dtype (int8: int8 GEMMs); training: autocast")  # fmt: skip
    p.add_argument("--mode", choices=("infer", "train"), default="infer", help="train: forward, loss, backward, AdamW")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (inference: with freezing)")
    p.add_argument(
        "--against", default="timm,torchvision,hf",
        help="comma-separated: timm, torchvision, hf, swinkit:<model>, swinkit-fp32-eager (swinkit's own fp32 eager)",
    )
    p.add_argument("--rounds", type=int, default=7, help="alternating timed rounds")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe")
    p.add_argument("--default-allocator", action="store_true",
                   help="leave glibc's malloc thresholds alone (see swinkit.runtime), to measure them")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_benchmark)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Under torchrun only rank 0 prints: the other ranks log errors only, and their Python warnings are silenced (the
    # same warning from every process is noise). Other libraries' loggers (botocore's "Found credentials ...") say
    # only warnings, unless --verbose.
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger(__package__).setLevel(level if rank == 0 else logging.ERROR)
    if rank != 0:
        warnings.simplefilter("ignore")
    from .core.errors import SwinkitError
    from .core.signals import Interrupted
    from .runtime import reuse_freed_memory

    if not getattr(args, "default_allocator", False):
        reuse_freed_memory()
    try:
        return args.func(args)
    except Interrupted as stop:  # a signal stopped a run after saving last/: where, how to resume, 128 + signal
        if rank == 0:
            print(f"swinkit {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside a training loop, or a second one inside it
        print(f"swinkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except SwinkitError as err:
        # A user's mistake: one line naming the problem and the fix. SWINKIT_DEBUG=1 shows where it was raised.
        if os.environ.get("SWINKIT_DEBUG"):
            raise
        message = " ".join(str(err).split())
        print(f"swinkit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of the output went away (`swinkit configs | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

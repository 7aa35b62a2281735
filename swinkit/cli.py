"""The ``swinkit`` command line: one subcommand per job, each parsing its flags and calling one library function."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from . import models


def _count_params_and_macs(name: str) -> tuple[int, int, tuple[int, int]]:
    with torch.device("meta"):
        model = models.create_model(name)
    return sum(p.numel() for p in model.parameters()), models.count_flops(model), model.img_size


def cmd_models(args: argparse.Namespace) -> int:
    names = models.list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        info = models.model_info(name)
        params, macs, (h, w) = _count_params_and_macs(name)
        size = f"{h}" if h == w else f"{h}x{w}"
        top1 = f"{info.top1:.1f}" if info.top1 is not None else "-"
        rows.append(
            (
                name,
                f"{params / 1e6:.2f}",
                f"{macs / 1e9:.2f}",
                size,
                str(info.num_classes),
                top1,
                ", ".join(info.aliases),
            )
        )
    header = ("model", "params (M)", "GMACs", "img size", "classes", "top-1", "aliases")
    if args.markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(row)) + " |")
        return 0
    widths = (-42, 10, 8, 9, 7, 6)
    for row in (header, *rows):
        cells = [f"{cell:<{-w}}" if w < 0 else f"{cell:>{w}}" for cell, w in zip(row, widths, strict=False)]
        print(" ".join(cells) + "  " + row[-1])
    return 0


def _config(args: argparse.Namespace):
    from .engine.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "data", None):
        overrides += ["data.dataset=folder", f"data.root={args.data}"]
    if getattr(args, "output", None):
        overrides.append(f"train.output={args.output}")
    return load_config(args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.train import train

    config = args.config
    if args.resume and config is None:
        # Continue with the run's own resolved config unless another one is given.
        config = str(Path(args.resume) / "config.yaml")
    args.config = config
    train(_config(args), resume=args.resume)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .engine.evaluate import run_eval

    if args.config is None:
        saved = Path(args.checkpoint) / "config.yaml"
        args.config = str(saved) if saved.is_file() else None
    output, args.output = args.output, None
    run_eval(_config(args), args.checkpoint, output=output)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swinkit", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list models with parameter counts and default image size")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'swinv2*'")
    p.add_argument("--markdown", action="store_true", help="print a markdown table (the README's model zoo)")
    p.set_defaults(func=cmd_models)

    overrides_help = "dotted config overrides, e.g. optim.lr=1e-3 sched.epochs=10"
    p = sub.add_parser("train", help="train a model; with no arguments, the quick start on the built-in digits")
    p.add_argument("-c", "--config", help="recipe name (`swinkit configs`) or YAML file; default: quickstart")
    p.add_argument("--data", help="dataset directory in ImageNet layout (DIR/train/<class>/*, DIR/val/<class>/*)")
    p.add_argument("--output", help="run directory (default: runs/<config name>, or runs/<config name>-N when taken)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="top-1/top-5 of a checkpoint on the validation set; writes eval.json")
    p.add_argument("-c", "--config", help="recipe name or YAML file (default: the checkpoint's config.yaml)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint directory (RUN_DIR/checkpoints/best) or file")
    p.add_argument("--data", help="dataset directory in ImageNet layout")
    p.add_argument("--output", help="directory for eval.json (default: the checkpoint directory)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("configs", help="list the shipped recipes")
    p.set_defaults(func=cmd_configs)

    p = sub.add_parser("plot", help="draw RUN_DIR/curves.png from RUN_DIR/metrics.jsonl")
    p.add_argument("run_dir")
    p.add_argument("--output", help="image path (default: RUN_DIR/curves.png)")
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Under torchrun only rank 0 prints; the other ranks log warnings and errors only.
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, format="%(message)s")
    from .checkpoints.io import CheckpointError
    from .data.datasets import DataLayoutError
    from .engine.config import ConfigError

    try:
        return args.func(args)
    except ConfigError as err:
        print(f"swinkit {args.command}: config error: {err}", file=sys.stderr)
        return 2
    except (DataLayoutError, CheckpointError, FileExistsError, FileNotFoundError) as err:
        print(f"swinkit {args.command}: error: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        # The engine's own stops (non-finite loss, too many unreadable images) explain themselves.
        if type(err).__name__ not in ("NonFiniteLossError", "TooManyBadImagesError"):
            raise
        print(f"swinkit {args.command}: error: {err}", file=sys.stderr)
        return 1

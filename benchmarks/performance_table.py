"""Produce the README's performance table: every row of issue 7's targets, measured with ``swinkit benchmark``.

    python benchmarks/performance_table.py [--rounds 7] [--output benchmarks/results.md] [--default-allocator]

Each row is one ``run_benchmark`` call (models timed alternately in one process); the markdown table, with the
machine, date and torch version, is printed and written to ``--output``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import torch

from swinkit.core.machine import describe
from swinkit.runtime import reuse_freed_memory
from swinkit.tools.benchmark import format_report, run_benchmark

# (label, model, kwargs, peers, target)
ROWS = [
    ("swinv2_tiny_window8_256 infer fp32 b8", "swinv2_tiny_window8_256", dict(batch_size=8),
     ("timm", "torchvision", "hf"), ">= 2.0x timm, torchvision, HF"),
    ("swinv2_tiny_window16_256 infer fp32 b8", "swinv2_tiny_window16_256", dict(batch_size=8), ("timm",),
     ">= 2.0x timm"),
    ("swinv2_tiny_window8_256 infer bf16 b8", "swinv2_tiny_window8_256", dict(batch_size=8, dtype="bf16"), ("timm",),
     ">= 1.5x timm"),
    ("swinv2_tiny_window8_256 train fp32 b16", "swinv2_tiny_window8_256", dict(batch_size=16, mode="train"),
     ("timm",), ">= 1.5x timm; peak memory <= timm"),
    ("swin_tiny_patch4_window7_224 infer fp32 b8", "swin_tiny_patch4_window7_224", dict(batch_size=8), ("timm",),
     ">= 1.3x timm"),
    ("cswin_tiny_224 infer fp32 b8", "cswin_tiny_224", dict(batch_size=8),
     ("swinkit:swin_tiny_patch4_window7_224",), ">= 0.93x swinkit Swin-T"),
    ("swinv2_tiny_window8_256 infer fp32 b8, compiled", "swinv2_tiny_window8_256",
     dict(batch_size=8, compile=True), (), ">= 50% of the fp32 matmul peak"),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", default="benchmarks/results.md")
    parser.add_argument("--default-allocator", action="store_true", help="leave glibc's malloc thresholds alone")
    args = parser.parse_args()
    if not args.default_allocator and reuse_freed_memory():
        allocator = "freed memory kept for reuse (`swinkit.runtime`, as every swinkit command)"
    else:
        allocator = "glibc default"
    header = (
        f"Measured {datetime.date.today()} on {describe()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, allocator {allocator}, by `python benchmarks/performance_table.py`.\n\n"
        "| workload | target | swinkit img/s | peer img/s | swinkit / peer | peak MB swinkit / peer | swinkit MFU |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for label, model, kwargs, peers, target in ROWS:
        report = run_benchmark(model, against=peers, rounds=args.rounds, **kwargs)
        print(format_report(report), flush=True)
        ours, others = report.results[0], report.results[1:]
        ratios = report.ratios()
        peer_rates = ", ".join(f"{r.name} {r.img_per_s:.2f}" for r in others) or "-"
        ratio = ", ".join(f"{r.name} {ratios[r.name]:.2f}x" for r in others) or "-"
        memory = " / ".join(f"{r.peak_mem_mb:.0f}" for r in report.results if r.peak_mem_mb is not None)
        lines.append(f"| {label} | {target} | {ours.img_per_s:.2f} | {peer_rates} | {ratio} | {memory} | "
                     f"{ours.mfu:.1%} of {report.matmul_peak_gflops:.0f} GFLOP/s |")  # fmt: skip
    table = header + "\n".join(lines) + "\n"
    Path(args.output).write_text(table)
    print(table)


if __name__ == "__main__":
    main()

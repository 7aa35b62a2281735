"""Produce the performance table (docs/performance.md includes its output): the CPU inference and training targets,
measured with ``swinkit benchmark``.

    python benchmarks/performance_table.py [--rounds 7] [--output benchmarks/results.md] [--default-allocator]

Each row is one ``run_benchmark`` call (models timed alternately in one process, so each ratio is measured in one
run); the markdown table, with the CPU, its ISA, the matmul peaks, date and torch version, is printed and written to
``--output``. Compiled rows also count the graph breaks ``torch._dynamo.explain`` finds. Run it on an otherwise idle
machine.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import torch

from swinkit.core.machine import describe
from swinkit.models import create_model
from swinkit.runtime import reuse_freed_memory
from swinkit.tools.benchmark import format_report, run_benchmark
from swinkit.tools.matmul_peak import peaks_line

# (label, model, kwargs, peers, target)
V2T = "swinv2_tiny_window8_256"
BASE = "swinkit-fp32-eager"
ROWS = [
    (f"{V2T} infer fp32 b8", V2T, dict(batch_size=8), ("timm", "torchvision", "hf"), ">= 1.3x timm, torchvision, HF"),
    ("swin_tiny_patch4_window7_224 infer fp32 b8", "swin_tiny_patch4_window7_224", dict(batch_size=8), ("timm",),
     ">= 1.3x timm"),
    (f"{V2T} infer bf16 b8", V2T, dict(batch_size=8, dtype="bf16"), ("timm", BASE),
     ">= 1.5x timm bf16; >= 60% of the bf16 matmul peak"),
    (f"{V2T} infer fp32 b8, compiled", V2T, dict(batch_size=8, compile=True), (BASE,),
     ">= 1.3x swinkit fp32 eager; 0 graph breaks"),
    (f"{V2T} infer bf16 b8, compiled", V2T, dict(batch_size=8, dtype="bf16", compile=True), (BASE, "timm"),
     "(no target: the fastest path; timm compiled alike)"),
    (f"{V2T} infer int8 b8", V2T, dict(batch_size=8, dtype="int8"), (BASE,), ">= 2x swinkit fp32 eager"),
    (f"{V2T} train fp32 b16", V2T, dict(batch_size=16, mode="train"), ("timm",),
     ">= 1.2x timm (stretch); peak memory <= timm"),
    ("swinv2_tiny_window16_256 infer fp32 b8", "swinv2_tiny_window16_256", dict(batch_size=8), ("timm",),
     ">= 2.0x timm (issue 7)"),
    ("cswin_tiny_224 infer fp32 b8", "cswin_tiny_224", dict(batch_size=8),
     ("swinkit:swin_tiny_patch4_window7_224",), ">= 0.93x swinkit Swin-T"),
]  # fmt: skip


def graph_breaks(name: str, batch_size: int) -> int:
    """Graph breaks of the model's inference forward under ``torch._dynamo.explain``."""
    model = create_model(name).eval()
    with torch.no_grad():
        return torch._dynamo.explain(model)(torch.randn(batch_size, 3, *model.img_size)).graph_break_count


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
        f"{torch.__version__}, allocator {allocator}, by `python benchmarks/performance_table.py`; "
        f"{peaks_line(torch.device('cpu'))}.\n\n"
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
        if kwargs.get("compile"):
            ratio += f"; {graph_breaks(model, kwargs['batch_size'])} graph breaks"
        memory = " / ".join(f"{r.peak_mem_mb:.0f}" for r in report.results if r.peak_mem_mb is not None) or "-"
        lines.append(f"| {label} | {target} | {ours.img_per_s:.2f} | {peer_rates} | {ratio} | {memory} | "
                     f"{ours.mfu:.1%} of {report.matmul_peak_gflops:.0f} GFLOP/s |")  # fmt: skip
    table = header + "\n".join(lines) + "\n"
    Path(args.output).write_text(table)
    print(table)


if __name__ == "__main__":
    main()

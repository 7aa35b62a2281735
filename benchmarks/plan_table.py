"""The "Large models" page's memory table: `swinkit plan` for SwinV2-B/L/H/G at 192 px on 8 GPUs.

Per-GPU batch 16, bf16, AdamW, the `swinv2_tiny_window8_256` recipe with the model swapped; DDP, FSDP, and FSDP with
every block checkpointed. Prints a markdown table (GiB per GPU) and the rows of the SwinV2-G FSDP plan.

    python benchmarks/plan_table.py [--output benchmarks/plan_results.md]
"""

from __future__ import annotations

import argparse
import time

from recorded import recorded

from swinkit.engine.config import load_config
from swinkit.engine.plan import GIB, plan

MODELS = ("swinv2_base_window12_192", "swinv2_large_window12_192", "swinv2_huge_window12_192",
          "swinv2_giant_window12_192")  # fmt: skip
SETUPS = (("DDP", "ddp", False), ("FSDP", "fsdp", False), ("FSDP + grad checkpointing", "fsdp", True))
NPROC, BATCH = 8, 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="benchmarks/plan_results.md")
    args = parser.parse_args()
    start = time.perf_counter()
    header = ["model", "params", *(name for name, _, _ in SETUPS)]
    rows, giant = [], None
    for name in MODELS:
        row = [f"`{name}`"]
        for _, parallel, checkpointing in SETUPS:
            overrides = [f"model.name={name}", f"data.batch_size={BATCH}", "train.precision=bf16",
                         f"model.grad_checkpointing={str(checkpointing).lower()}"]  # fmt: skip
            cfg = load_config("swinv2_tiny_window8_256", overrides)
            result = plan(cfg, NPROC, parallel)
            if len(row) == 1:
                row.append(f"{result.params / 1e6:.0f}M")
            row.append(f"{result.total / GIB:.1f}")
            if name == MODELS[-1] and parallel == "fsdp" and not checkpointing:
                giant = result
        rows.append(row)
    with recorded(args.output):
        print(f"Per GPU, {NPROC} GPUs, 192 px, batch {BATCH} per GPU, bf16, AdamW (GiB):\n")
        print(f"| {' | '.join(header)} |\n|{'---|' * len(header)}")
        for row in rows:
            print(f"| {' | '.join(row)} |")
        print(f"\nSwinV2-G with FSDP on {NPROC} GPUs (`swinkit plan -c swinv2_tiny_window8_256 "
              f"model.name={MODELS[-1]} data.batch_size={BATCH} train.precision=bf16 --nproc {NPROC} "
              f"--parallel fsdp`):\n\n```\n{giant}\n```")  # fmt: skip
    print(f"\n({time.perf_counter() - start:.0f} s)")

if __name__ == "__main__":
    main()

"""benchmarks/gpu_check.py --device cpu --quick: every correctness check passes on the CPU and the tables are written
(the same script, unabridged, is what a GPU machine runs)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.engine_utils import REPO


def test_the_gpu_check_runs_on_the_cpu_and_writes_its_tables(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--output", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(result["checks"]) == 11 and all(c["passed"] for c in result["checks"])
    assert {(r["model"], r["mode"]) for r in result["speed"]} == {
        (m, mode) for m in ("swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224") for mode in ("train", "infer")}
    assert all(r["swinkit_img_s"] > 0 and r["timm_img_s"] > 0 for r in result["speed"])
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| swinv2_tiny_window8_256 | train bf16 | 2 | no |" in table and table in proc.stdout

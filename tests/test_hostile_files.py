"""Hostile and broken checkpoint files end in ``CheckpointError``, in bounded memory (run in a capped subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_hostile_files_and_fuzzed_mutants_only_raise_checkpoint_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "tests.hostile_files", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["escaped"] == []
    assert len(result["refused"]) == 16 and len(result["valid"]) == 5 and result["mutants"] == 500
    assert result["peak_rss_mb"] < 1024, result

"""`swinkit benchmark`: peers agree with swinkit on shared weights and the report holds measured numbers."""

from __future__ import annotations

import json

import pytest

from swinkit.cli import main
from swinkit.tools.benchmark import run_benchmark


def test_benchmark_against_timm_and_hf_reports_agreement_speed_and_memory():
    report = run_benchmark("swin_tiny_patch4_window7_224", batch_size=1, against=("timm", "hf"), rounds=1, iters=1,
                           warmup=1, log=lambda _: None)  # fmt: skip
    assert [r.name for r in report.results] == ["swinkit", "timm", "hf"]
    assert all(r.max_rel_diff <= 1e-4 for r in report.results[1:])
    assert all(r.img_per_s > 0 and r.peak_mem_mb > 100 and r.mfu > 0 for r in report.results)
    assert set(report.ratios()) == {"timm", "hf"} and report.matmul_peak_gflops > 0
    assert report.gflop_per_img == pytest.approx(2 * 4.49, rel=0.01)


def test_benchmark_cli_json_train_mode(capsys):
    args = ["benchmark", "--model", "swinv2_tiny_window8_256", "--batch-size", "1", "--mode", "train",
            "--against", "swinkit:swin_tiny_patch4_window7_224", "--rounds", "1", "--no-memory", "--json"]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "train"
    assert report["results"][1]["name"] == "swinkit:swin_tiny_patch4_window7_224"
    assert report["results"][0]["peak_mem_mb"] is None


def test_benchmark_rejects_unknown_peer():
    with pytest.raises(ValueError, match="unknown peers"):
        run_benchmark("swin_tiny_patch4_window7_224", against=("keras",))


def test_bf16_inference_against_swinkit_fp32_eager_in_the_same_run():
    report = run_benchmark("swin_tiny_patch4_window7_224", batch_size=1, dtype="bf16", against=("swinkit-fp32-eager",),
                           rounds=1, iters=1, warmup=1, measure_memory=False, log=lambda _: None)  # fmt: skip
    assert [r.name for r in report.results] == ["swinkit", "swinkit-fp32-eager"]
    assert all(0 < r.mfu <= 1 for r in report.results) and "cores available" in report.host
    assert set(report.ratios()) == {"swinkit-fp32-eager"}


def test_int8_is_benchmarked_against_swinkit_alone():
    with pytest.raises(ValueError, match="int8 is swinkit's eager CPU inference path"):
        run_benchmark("swin_tiny_patch4_window7_224", dtype="int8", against=("timm",))
    with pytest.raises(ValueError, match="int8 is swinkit's eager CPU inference path"):
        run_benchmark("swin_tiny_patch4_window7_224", dtype="int8", mode="train", against=())

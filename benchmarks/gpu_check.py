"""One script for an accelerator: is swinkit correct there, and how fast is it against timm.

    python benchmarks/gpu_check.py                      # the accelerator there is (about 8 minutes on one GPU)
    python benchmarks/gpu_check.py --device cpu --quick # the same checks, small, on the CPU (CI runs this)

1. Correctness: logits on the device against the CPU for Swin V1, V2 and CSWin (fp32 within 1e-4 relative, bf16
   within 2e-2); 20-step training runs on the built-in digits in bf16 and in fp16 (GradScaler) stay finite and their
   loss decreases; a run stopped mid-epoch and resumed on the device ends at the uninterrupted run's weights
   (deterministic algorithms on); evaluation on the device counts what the CPU counts; the attention-bias cache
   follows the model to the device.
2. Speed, the same weights in swinkit and timm, alternating rounds in one process (``swinkit.tools.benchmark``):
   swinv2_tiny_window8_256 and swin_tiny_patch4_window7_224 training (bf16 autocast, AdamW; with and without
   torch.compile) and inference (bf16): img/s, peak memory and MFU against the device's measured bf16 matmul peak.
3. Writes ``gpu_check.md`` (the tables) and ``gpu_check.json`` (every number) into ``--output``.

Exit status 1 when a correctness check fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS for the resume check

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import swinkit  # noqa: E402
from swinkit.core import device as devices  # noqa: E402
from swinkit.core.machine import describe  # noqa: E402
from swinkit.deploy.eval_checkpoint import run_eval  # noqa: E402
from swinkit.engine.config import load_config  # noqa: E402
from swinkit.engine.train import train  # noqa: E402
from swinkit.tools.benchmark import run_benchmark  # noqa: E402
from swinkit.tools.peers import perturb_parameters  # noqa: E402

FAMILIES = ("swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "cswin_tiny_224")
SMALL = {  # --quick: the same code paths at a size a CPU runs in seconds
    "swin_tiny_patch4_window7_224": dict(img_size=64, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4)),
    "swinv2_tiny_window8_256": dict(img_size=64, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4)),
    "cswin_tiny_224": dict(img_size=64, embed_dim=32, depths=(1, 2, 1, 1), num_heads=(2, 2, 4, 4)),
}
SPEED_MODELS = ("swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224")
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def check_logits(device: torch.device, quick: bool) -> list[Check]:
    checks = []
    for name in FAMILIES:
        model = swinkit.create_model(name, **(SMALL[name] if quick else {}))
        perturb_parameters(model, 0, std=0.02)  # non-trivial norms and biases, not the zero/one initialisation
        model.eval()
        x = torch.randn(4, 3, *model.img_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            reference = model(x)
            model.to(device)
            for precision in ("fp32", "bf16"):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    got = model(x.to(device)).cpu()
                diff = _relative(got, reference)
                limit = TOLERANCE[precision]
                checks.append(Check(f"logits {name} {precision} vs CPU fp32", diff <= limit,
                                    f"max relative difference {diff:.2e} (limit {limit:g})"))  # fmt: skip
    return checks


def check_bias_cache(device: torch.device) -> Check:
    """A model that filled its attention-bias cache on the CPU computes on the device after ``.to()``."""
    model = swinkit.create_model("swinv2_tiny_window8_256", **SMALL["swinv2_tiny_window8_256"]).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        on_cpu = model(x)
        moved = model.to(device)(x.to(device)).cpu()
        fresh = swinkit.create_model("swinv2_tiny_window8_256", **SMALL["swinv2_tiny_window8_256"]).eval()
        fresh.load_state_dict(model.state_dict())
        again = fresh.to(device)(x.to(device)).cpu()
    diff = _relative(moved, on_cpu)
    return Check("attention-bias cache after .to(device)", torch.equal(moved, again) and diff <= 1e-4,
                 f"equal to a model built on the device; {diff:.1e} from the CPU")  # fmt: skip


def _digits(out: Path, device: torch.device, *overrides: str):
    return load_config("quickstart", [
        f"train.output={out}", f"train.device={device.type}", "data.batch_size=32", "data.max_train_samples=320",
        "data.max_val_samples=128", "sched.epochs=2", "sched.warmup_epochs=0", "train.log_every=1000", *overrides,
    ])  # fmt: skip


def _losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train_loss"] for line in lines if "train_loss" in line]


def check_training(device: torch.device, tmp: Path) -> list[Check]:
    checks = []
    for precision in ("bf16", "fp16"):
        run = tmp / f"train-{precision}"
        train(_digits(run, device, f"train.precision={precision}"))  # 2 epochs x 10 steps
        losses = _losses(run)
        ok = all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
        note = " (runs as bf16 autocast on the CPU)" if precision == "fp16" and device.type == "cpu" else ""
        detail = f"epoch losses {', '.join(f'{v:.4f}' for v in losses)}"
        checks.append(Check(f"training 20 steps {precision}{note}", ok, detail))
    return checks


def check_resume(device: torch.device, tmp: Path) -> Check:
    common = ["train.deterministic=true", "train.precision=fp32"]
    train(_digits(tmp / "whole", device, *common))
    train(_digits(tmp / "cut", device, *common, "train.stop_after_steps=13"))  # mid-epoch 2
    train(_digits(tmp / "cut", device, *common), resume=str(tmp / "cut"))
    a, b = (load_file(tmp / r / "checkpoints" / "last" / "model.safetensors") for r in ("whole", "cut"))
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    return Check("resume mid-epoch = uninterrupted (deterministic)", same, f"max |dw| {worst:.1e}")


def check_eval(device: torch.device, tmp: Path) -> Check:
    cfg = _digits(tmp / "whole", device, "data.max_val_samples=null")
    on_device = run_eval(cfg, str(tmp / "whole" / "checkpoints" / "last"), output=str(tmp / "eval-device"))
    on_cpu = run_eval(_digits(tmp / "whole", torch.device("cpu"), "data.max_val_samples=null"),
                      str(tmp / "whole" / "checkpoints" / "last"), output=str(tmp / "eval-cpu"))  # fmt: skip
    differ = abs(on_device["top1"] - on_cpu["top1"]) * on_cpu["n"] / 100
    return Check("evaluation on the device counts what the CPU counts", on_device["n"] == on_cpu["n"] == 360
                 and differ < 1.5, f"n {on_device['n']}/{on_cpu['n']}, top-1 {on_device['top1']:.2f}/"
                 f"{on_cpu['top1']:.2f} ({differ:.0f} image(s) apart)")  # fmt: skip


def speed(device: torch.device, quick: bool) -> list[dict]:
    rows = []
    rounds, iters, warmup = (2, 1, 1) if quick else (5, 5, 3)
    for name in SPEED_MODELS:
        for mode, batch, compiled in (("train", 128, False), ("train", 128, True), ("infer", 256, False),
                                      ("infer", 256, True)):  # fmt: skip
            if quick and compiled:
                continue  # compiling full-size models takes minutes on a CPU
            report = run_benchmark(name, batch_size=2 if quick else batch, dtype="bf16", mode=mode, compile=compiled,
                                   against=("timm",), rounds=rounds, iters=iters, warmup=warmup, device=str(device),
                                   log=lambda _: None)  # fmt: skip
            ours, timm = report.results[0], next((r for r in report.results if r.name == "timm"), None)
            rows.append({
                "model": name, "mode": mode, "batch": report.batch_size, "compile": compiled,
                "swinkit_img_s": ours.img_per_s, "timm_img_s": timm.img_per_s if timm else None,
                "ratio": report.ratios().get("timm"), "swinkit_peak_mb": ours.peak_mem_mb,
                "timm_peak_mb": timm.peak_mem_mb if timm else None, "swinkit_mfu": ours.mfu,
                "timm_mfu": timm.mfu if timm else None, "bf16_matmul_peak_tflops": report.matmul_peak_gflops / 1e3,
            })  # fmt: skip
            print(f"  {name} {mode}{' compiled' if compiled else ''}: swinkit {ours.img_per_s:.1f} img/s, timm "
                  f"{rows[-1]['timm_img_s'] or 0:.1f} img/s, ratio {rows[-1]['ratio'] or 0:.2f}", flush=True)
    return rows


def markdown(where: str, checks: list[Check], rows: list[dict]) -> str:
    lines = [f"Measured {datetime.date.today()} on {where} by `python benchmarks/gpu_check.py`.", "",
             "| check | result | detail |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |" for c in checks]
    lines += ["", "| model | mode | batch | compile | swinkit img/s | timm img/s | swinkit / timm | peak MB swinkit / "
              "timm | MFU swinkit / timm |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['mode']} bf16 | {r['batch']} | {'yes' if r['compile'] else 'no'} | "
            f"{r['swinkit_img_s']:.1f} | {r['timm_img_s'] or 0:.1f} | {r['ratio'] or 0:.2f} | "
            f"{r['swinkit_peak_mb'] or 0:.0f} / {r['timm_peak_mb'] or 0:.0f} | "
            f"{r['swinkit_mfu']:.1%} / {r['timm_mfu'] or 0:.1%} |"
        )
    if rows:
        lines += ["", f"bf16 matmul peak measured at start: {rows[0]['bf16_matmul_peak_tflops']:.1f} TFLOP/s."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (the accelerator there is), cuda, npu, xpu, cpu, ...")
    parser.add_argument("--quick", action="store_true", help="small models and batches (CI, CPU)")
    parser.add_argument("--output", default="benchmarks/gpu_check", help="directory for gpu_check.md/.json")
    args = parser.parse_args()
    device = devices.resolve(args.device)
    where = f"{device.type}" + ("" if device.type == "cpu" else f" ({torch.accelerator.current_accelerator()})")
    where += f"; host {describe()}; torch {torch.__version__}"
    print(where, flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checks = check_logits(device, args.quick) + [check_bias_cache(device)] + check_training(device, tmp)
        checks += [check_resume(device, tmp), check_eval(device, tmp)]
    for c in checks:
        print(f"{'pass' if c.passed else 'FAIL'}  {c.name}: {c.detail}", flush=True)
    rows = speed(device, args.quick)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(where, checks, rows)
    (out / "gpu_check.md").write_text(table)
    (out / "gpu_check.json").write_text(json.dumps({"where": where, "seconds": time.perf_counter() - t0,
                                                    "checks": [asdict(c) for c in checks], "speed": rows},
                                                   indent=1) + "\n")  # fmt: skip
    print(table)
    print(f"{time.perf_counter() - t0:.0f} s; wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The int8 routes side by side: swinkit's int8 GEMMs in eager PyTorch (``--precision int8``), the int8 ONNX Runtime
graphs (``swinkit export --format onnx --quantize int8``, dynamic and static ``--calibrate DIR``) and, for reference,
the fp32 ONNX graph, each against swinkit's fp32 eager forward, in one process.

    python benchmarks/int8_routes.py [--model swinv2_tiny_window8_256] [--batch-size 8] [--rounds 7]
        [--output benchmarks/int8_results.md]

The model gets random non-trivial weights; every route classifies the same batch in alternating rounds (after a
warm-up) and the table gives the median img/s, its min-max spread, the ratio to fp32 eager and the largest logit
difference from fp32 relative to the largest logit. The static graph is calibrated on random images: its speed
does not depend on its ranges, and its logit difference here is no measure of its accuracy, which
``benchmarks/precision_table.py`` gives on a trained checkpoint. PT2E quantization (torchao's x86 Inductor
quantizer) is not here: it needs torchao, which swinkit does not depend on (its measurements are in
``swinkit.deploy.int8``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from recorded import recorded

from swinkit.deploy.export import export, onnx_runner
from swinkit.deploy.inference import InferenceModel
from swinkit.deploy.onnx_int8 import CALIBRATION_BATCH
from swinkit.models import create_model
from swinkit.runtime import reuse_freed_memory
from swinkit.tools.peers import perturb_parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="swinv2_tiny_window8_256")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", default="benchmarks/int8_results.md")
    args = parser.parse_args()
    reuse_freed_memory()
    model = perturb_parameters(create_model(args.model, drop_path_rate=0.0), 0, std=0.02).eval()
    x = torch.randn(args.batch_size, 3, *model.img_size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {}
        calibration = Path(tmp) / "calibration"
        calibration.mkdir()
        noise = torch.Generator().manual_seed(1)
        for i in range(CALIBRATION_BATCH):
            pixels = torch.randint(0, 256, (*model.img_size, 3), dtype=torch.uint8, generator=noise)
            Image.fromarray(pixels.numpy()).save(calibration / f"{i}.png")
        for name, quantize, calibrate in (("onnxruntime int8 dynamic", "int8", None),
                                          ("onnxruntime int8 static", "int8", calibration),
                                          ("onnxruntime fp32", None, None)):  # fmt: skip
            path = Path(tmp) / f"{name.replace(' ', '-')}.onnx"
            export(None, path, model=copy.deepcopy(model), dynamic_batch=True, quantize=quantize, calibrate=calibrate)
            graphs[name] = onnx_runner(path)
    routes = {
        "swinkit fp32 eager": InferenceModel(copy.deepcopy(model), "fp32"),
        "swinkit int8": InferenceModel(copy.deepcopy(model), "int8"),
        **graphs,
    }
    reference = routes["swinkit fp32 eager"](x)
    differences = {}
    for name, run in routes.items():
        out = run(x)
        run(x)
        differences[name] = ((out - reference).abs().max() / reference.abs().max()).item()
    times = {name: [] for name in routes}
    for r in range(args.rounds):
        for name in list(routes) if r % 2 == 0 else list(routes)[::-1]:
            start = time.perf_counter()
            routes[name](x)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(args.batch_size / t for t in times["swinkit fp32 eager"])
    with recorded(args.output):
        print(f"`{args.model}`, random non-trivial weights, batch {args.batch_size}, {args.rounds} rounds:\n")
        print("| route | img/s | spread | x fp32 eager | max logit difference |\n|---|---|---|---|---|")
        for name, seconds in times.items():
            rates = [args.batch_size / t for t in seconds]
            median = statistics.median(rates)
            print(f"| {name} | {median:.2f} | {min(rates):.1f}-{max(rates):.1f} | {median / base:.2f} | "
                  f"{differences[name]:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()

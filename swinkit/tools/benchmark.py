"""``swinkit benchmark``: swinkit against timm, torchvision and HF transformers on the same machine, side by side.

For each peer that has the architecture, the peer model is built with random non-trivial weights, the same weights
are loaded into swinkit through ``load_checkpoint`` and the outputs are compared; a disagreement stops the benchmark.
Then every model runs in alternating rounds in one process (after a warm-up), so machine noise hits all of them
alike, and the table reports the median throughput with its spread (min-max over rounds), the ratio of swinkit to
each peer, the peak memory of one step and the model FLOP utilisation against a matmul peak measured at start. A peer
``swinkit:<name>`` is another swinkit architecture on the same input (no weights to compare), e.g. CSWin-T against
Swin-T.

Inference runs every model the way ``swinkit eval``/``predict`` run swinkit's: ``InferenceModel`` (bf16: the weights
cast to bf16, not autocast; ``compile``: Inductor with freezing), peers included, so that each model gets the same
treatment. Training runs under autocast (bf16/fp16) and plain ``torch.compile``. The peer ``swinkit-fp32-eager`` is
swinkit's model itself, in fp32 and not compiled: the baseline a compiled or reduced-precision row is measured
against, in the same run.

Peak memory (``peak_memory_mb``) is measured once per model after the timing: the CUDA allocator's peak, or on CPU
the live tensor storage counted by torch's ``MemTracker``. The matmul peak that MFU is measured against is
``matmul_peak.matmul_peak_gflops`` of the run's dtype.
"""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from ..checkpoints import load_checkpoint
from ..core import device as devices
from ..core import machine
from ..core.errors import ConfigError
from ..deploy.inference import DTYPES, InferenceModel
from ..layers import to_2tuple
from .matmul_peak import matmul_peak_gflops
from .peers import PEERS, HFLogits, perturb_parameters

BASELINE = "swinkit-fp32-eager"
PRECISIONS = (*DTYPES, "int8")
PEAK_DTYPES = {**DTYPES, "int8": torch.int8}


@dataclass
class Result:
    name: str
    img_per_s: float
    spread: tuple[float, float]
    peak_mem_mb: float | None
    mfu: float
    max_rel_diff: float | None = None


@dataclass
class Report:
    model: str
    mode: str
    dtype: str
    batch_size: int
    img_size: tuple[int, int]
    compile: bool
    device: str
    threads: int
    matmul_peak_gflops: float
    gflop_per_img: float
    torch_version: str = field(default_factory=lambda: torch.__version__)
    host: str = field(default_factory=machine.describe)
    results: list[Result] = field(default_factory=list)

    def ratios(self) -> dict[str, float]:
        ours = self.results[0].img_per_s
        return {r.name: ours / r.img_per_s for r in self.results[1:]}


# --- timing ------------------------------------------------------------------------------------------------------


def _autocast(device: torch.device, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def make_step(model: nn.Module, x: torch.Tensor, mode: str, dtype: str) -> tuple[Callable[[], None], list]:
    """One inference forward (of an ``InferenceModel``), or one training step (forward, cross-entropy, backward,
    AdamW step).

    Returns the step and the optimizers it owns (none for inference).
    """
    if mode == "infer":

        def infer() -> None:
            with torch.inference_mode():
                model(x)

        return infer, []
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    target = torch.randint(0, 10, (x.shape[0],), device=x.device)

    def train_step() -> None:
        with _autocast(x.device, dtype):
            logits = model(x)
        F.cross_entropy(logits.float(), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train_step, [optimizer]


def peak_memory_mb(model: nn.Module, x: torch.Tensor, mode: str, dtype: str) -> float:
    """Peak memory of one step after a warm-up one: parameters, gradients, optimizer state and activations.

    An accelerator reports its allocator's peak; on CPU, which keeps no allocator statistics, torch's ``MemTracker``
    counts the live tensor storage through the step.
    """
    step, optimizers = make_step(model, x, mode, dtype)
    step()
    if x.device.type != "cpu":
        devices.synchronize(x.device)
        devices.reset_peak_memory(x.device)
        step()
        devices.synchronize(x.device)
        return devices.peak_memory_bytes(x.device) / 2**20
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(model, *optimizers)
    with tracker:
        step()
    return sum(stats["Total"] for stats in tracker.get_tracker_snapshot("peak").values()) / 2**20


def run_benchmark(
    name: str,
    batch_size: int = 8,
    img_size: int | tuple[int, int] | None = None,
    dtype: str = "fp32",
    mode: str = "infer",
    compile: bool = False,
    against: tuple[str, ...] = ("timm", "torchvision", "hf"),
    rounds: int = 7,
    iters: int = 2,
    warmup: int = 2,
    device: str | None = None,
    measure_memory: bool = True,
    log: Callable[[str], None] = print,
) -> Report:
    """Benchmark swinkit's ``name`` against the peers that have it; see the module docstring."""
    if dtype not in PRECISIONS or mode not in ("infer", "train"):
        raise ConfigError(f"dtype must be one of {list(PRECISIONS)} and mode 'infer' or 'train'")
    if dtype == "int8" and (mode == "train" or compile or set(against) - {BASELINE}):
        raise ConfigError(
            f"int8 is swinkit's eager CPU inference path: benchmark it with --mode infer, without --compile, "
            f"against {BASELINE} (its fp32 eager self)"
        )
    unknown = {a for a in against if not a.startswith("swinkit:")} - set(PEERS) - {BASELINE}
    if unknown:
        raise ConfigError(
            f"unknown peers {sorted(unknown)}; choose from {', '.join(PEERS)}, {BASELINE} or swinkit:<model>"
        )
    dev = devices.resolve(device or "auto")
    ours = models.create_model(name, drop_path_rate=0.0)
    size = to_2tuple(img_size or ours.img_size)
    x = torch.randn(batch_size, 3, *size, generator=torch.Generator().manual_seed(0)).to(dev)

    entries: list[tuple[str, nn.Module, float | None]] = []
    for seed, impl in enumerate(against):
        if impl == BASELINE:  # built from swinkit's own model below
            continue
        if impl.startswith("swinkit:"):
            # Another swinkit architecture on the same input (e.g. CSWin-T against Swin-T): no weights to share.
            entries.append((impl, models.create_model(impl.split(":", 1)[1], drop_path_rate=0.0).to(dev), None))
            continue
        builder, layout = PEERS[impl]
        peer = builder(name, ours)
        if peer is None:
            log(f"{impl}: has no {name}; skipped")
            continue
        perturb_parameters(peer, seed, std=0.02)
        load_checkpoint(ours, peer.state_dict(), format=layout)
        peer = HFLogits(peer) if impl == "hf" else peer
        peer.to(dev).eval()
        ours.to(dev).eval()
        with torch.inference_mode():
            expected, actual = peer(x[:2]), ours(x[:2])
        diff = ((expected - actual).abs().max() / expected.abs().max()).item()
        if diff > 1e-4:
            raise RuntimeError(f"swinkit and {impl} disagree on {name}: max relative difference {diff:.2e}")
        entries.append((impl, peer, diff))
    ours.to(dev)
    if BASELINE in against:
        entries.insert(0, (BASELINE, copy.deepcopy(ours), None))
    entries.insert(0, ("swinkit", ours, None))

    flops_per_img = 2 * models.count_flops(ours, size) * (3 if mode == "train" else 1)
    precisions = {impl: "fp32" if impl == BASELINE else dtype for impl, _, _ in entries}
    peaks = {p: matmul_peak_gflops(PEAK_DTYPES[p], dev) for p in dict.fromkeys(precisions.values())}
    steps = {}
    for index, (impl, model, diff) in enumerate(entries):
        fast = impl != BASELINE
        if mode == "infer":
            model = InferenceModel(model, precisions[impl], compile=compile and fast)
        elif compile and fast:
            model = torch.compile(model)
        entries[index] = (impl, model, diff)
        steps[impl] = make_step(model, x, mode, precisions[impl])[0]
        for _ in range(warmup):
            steps[impl]()
    times: dict[str, list[float]] = {impl: [] for impl in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(steps)[::-1]
        for impl in order:
            devices.synchronize(dev)
            start = time.perf_counter()
            for _ in range(iters):
                steps[impl]()
            devices.synchronize(dev)
            times[impl].append((time.perf_counter() - start) / iters)

    report = Report(name, mode, dtype, batch_size, size, compile, str(dev), torch.get_num_threads(), peaks[dtype],
                    flops_per_img / 1e9)  # fmt: skip
    for impl, model, diff in entries:
        rates = [batch_size / t for t in times[impl]]
        median = statistics.median(rates)
        memory = peak_memory_mb(model, x, mode, precisions[impl]) if measure_memory else None
        mfu = median * flops_per_img / (peaks[precisions[impl]] * 1e9)
        report.results.append(Result(impl, median, (min(rates), max(rates)), memory, mfu, diff))
    return report


def format_report(report: Report) -> str:
    size = "x".join(map(str, report.img_size))
    lines = [
        f"{report.model} | {report.mode} | {report.dtype}{' compiled' if report.compile else ''} | batch "
        f"{report.batch_size} | {size} px | {report.device}, {report.threads} threads | torch {report.torch_version}",
        report.host,
        f"matmul peak {report.matmul_peak_gflops:.0f} GFLOP/s; {report.gflop_per_img:.1f} GFLOP per image",
        f"{'impl':<18} {'img/s':>8} {'spread':>15} {'swinkit x':>9} {'peak MB':>8} {'MFU':>6} {'max rel diff':>12}",
    ]
    ratios = report.ratios()
    for r in report.results:
        ratio = f"{ratios[r.name]:.2f}" if r.name in ratios else "-"
        memory = f"{r.peak_mem_mb:.0f}" if r.peak_mem_mb is not None else "-"
        diff = f"{r.max_rel_diff:.1e}" if r.max_rel_diff is not None else "-"
        spread = f"{r.spread[0]:.1f}-{r.spread[1]:.1f}"
        lines.append(f"{r.name:<18} {r.img_per_s:>8.2f} {spread:>15} {ratio:>9} {memory:>8} {r.mfu:>6.1%} {diff:>12}")
    return "\n".join(lines)


def report_json(report: Report) -> str:
    return json.dumps({**asdict(report), "ratios": report.ratios()}, indent=2)

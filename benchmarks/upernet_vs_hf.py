"""UperNet-Swin-T at 512 px against HF transformers' ``UperNetForSemanticSegmentation`` on the same weights, in one
process (docs/segmentation.md includes the output): forward img/s (median and spread of alternating rounds after a
warm-up) and the peak memory of one forward, both run as ``swinkit eval`` runs a model (``InferenceModel``, fp32);
then the backbones alone (with their output norms), to show where the time goes.

    python benchmarks/upernet_vs_hf.py [--batch-size 2] [--rounds 7] [--output benchmarks/upernet_results.md]

HF's model is built from swinkit's file by ``from_pretrained`` (random non-trivial weights, BatchNorm statistics
perturbed); the logits are checked to agree (1e-4) before anything is timed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from recorded import recorded

from swinkit.checkpoints import save_checkpoint
from swinkit.deploy.inference import InferenceModel
from swinkit.models import create_model
from swinkit.runtime import reuse_freed_memory
from swinkit.tools.benchmark import make_step, peak_memory_mb
from swinkit.tools.peers import perturb_parameters

NAME = "upernet_swin_tiny_patch4_window7_512"


class Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


class Features(torch.nn.Module):
    """The backbone and its output norms alone: the four maps the heads read."""

    def __init__(self, model: torch.nn.Module, hf: bool) -> None:
        super().__init__()
        self.model, self.hf = model, hf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.model.backbone(x).feature_maps if self.hf else self.model.forward_features(x)
        return maps[-1]


def hf_twin(ours: torch.nn.Module, folder: Path) -> torch.nn.Module:
    backbone = transformers.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                                       drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.UperNetConfig(backbone_config=backbone, hidden_size=512, auxiliary_channels=256,
                                        num_labels=ours.num_classes)  # fmt: skip
    config.save_pretrained(folder)
    save_checkpoint(ours, folder / "model.safetensors", format="hf")
    return transformers.UperNetForSemanticSegmentation.from_pretrained(folder).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", default="benchmarks/upernet_results.md")
    args = parser.parse_args()
    reuse_freed_memory()
    ours = perturb_parameters(create_model(NAME, drop_path_rate=0.0), seed=0, std=0.02).eval()
    with tempfile.TemporaryDirectory() as tmp:
        peer = Logits(hf_twin(ours, Path(tmp)))
    x = torch.randn(args.batch_size, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    runners = {"swinkit": InferenceModel(ours, "fp32"), "hf": InferenceModel(peer, "fp32"),
               "swinkit backbone": InferenceModel(Features(ours, False), "fp32"),
               "hf backbone": InferenceModel(Features(peer.model, True), "fp32")}  # fmt: skip
    with torch.inference_mode():
        expected, actual = runners["hf"](x), runners["swinkit"](x)
    difference = ((expected - actual).abs().max() / expected.abs().max()).item()
    if difference > 1e-4:
        raise RuntimeError(f"swinkit and HF disagree: max relative difference {difference:.2e}")
    steps = {name: make_step(runner, x, "infer", "fp32")[0] for name, runner in runners.items()}
    times = {name: [] for name in steps}
    for r in range(args.rounds):
        for name in list(steps) if r % 2 == 0 else list(steps)[::-1]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    memory = {name: peak_memory_mb(runner, x, "infer", "fp32") for name, runner in runners.items()}
    rates = {name: [args.batch_size / t for t in ts] for name, ts in times.items()}
    with recorded(args.output):
        print(f"`{NAME}` (150 classes), fp32 forward, batch {args.batch_size} at 512x512, {args.rounds} rounds; "
              f"logits agree to {difference:.1e} (relative):\n")
        print("| model | img/s | spread | x HF | peak MB |\n|---|---|---|---|---|")
        for name, values in rates.items():
            median = statistics.median(values)
            base = statistics.median(rates["hf backbone" if "backbone" in name else "hf"])
            print(f"| {name} | {median:.2f} | {min(values):.2f}-{max(values):.2f} | {median / base:.2f} | "
                  f"{memory[name]:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()

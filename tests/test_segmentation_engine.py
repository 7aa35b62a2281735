"""Segmentation on the one engine: the objective's loss, the iteration schedule, evaluation, a run and its resume."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from swinkit.checkpoints.io import read_file
from swinkit.core.errors import ConfigError
from swinkit.data.digit_scenes import DigitScenes
from swinkit.deploy.eval_checkpoint import run_eval
from swinkit.engine.config import SegConfig, load_config, resolve_iterations
from swinkit.engine.miou import area_histograms, scores
from swinkit.engine.objectives import Segmentation
from swinkit.engine.schedule import lr_at
from swinkit.engine.segmentation_eval import evaluate_segmentation, forwards, predict_logits
from swinkit.engine.train import train
from swinkit.hub import get_weights
from swinkit.models import create_model
from swinkit.tools.peers import perturb_parameters
from tests.engine_utils import (
    REPO,
    SLIDING,
    TINY_UPERNET,
    state_dicts_equal,
    tiny_upernet,
    torchrun,
    torchrun_program,
    uneven_batches,
)

SMALL = TINY_UPERNET


def small_config(out: Path, *overrides: str):
    return load_config("upernet_digits", [*SMALL, f"train.output={out}", *overrides])


class _Session:
    device, precision = torch.device("cpu"), "fp32"


def test_loss_is_mmseg_cross_entropy_of_both_heads():
    cfg = small_config(Path("unused"), "seg.class_weight=[0.1,1,2,1,1,1,1,1,1,1,3]")
    model = create_model("upernet_swin_tiny_patch4_window7_512", num_classes=11, channels=16, auxiliary_channels=8,
                         backbone_args=dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                                            window_size=4), drop_path_rate=0.0, dropout=0.0)  # fmt: skip
    model = perturb_parameters(model, seed=0, std=0.05).train()
    objective = Segmentation(cfg, _Session(), model, None, None, [str(i) for i in range(11)])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 11, (2, 32, 32), generator=torch.Generator().manual_seed(1))
    labels[:, :4] = 255
    torch.manual_seed(0)
    loss = objective.loss(model, images, labels, step=0)
    torch.manual_seed(0)
    main, auxiliary = model(images)
    weight = torch.tensor([0.1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 3])
    by_hand = [F.cross_entropy(o, labels, weight=weight, ignore_index=255, reduction="sum") / labels.numel()
               for o in (main, auxiliary)]  # fmt: skip
    assert loss.item() == pytest.approx((by_hand[0] + 0.4 * by_hand[1]).item(), rel=1e-6)


def test_poly_schedule_with_warmup_is_mmcvs():
    cfg = resolve_iterations(load_config("upernet_digits", ["sched.iterations=1000", "sched.warmup_iterations=100",
                                                            "train.iterations_per_epoch=250"]))  # fmt: skip
    assert cfg.sched.epochs == 4 and cfg.sched.warmup_epochs == 0.4
    for step in (0, 50, 99, 100, 500, 999):
        regular = 1e-3 * (1 - step / 1000) ** 1.0
        expected = regular * (1 - (1 - step / 100) * (1 - 1e-6)) if step < 100 else regular
        assert lr_at(step, 250, cfg.sched, 1e-3) == pytest.approx(expected, rel=1e-12)


def test_class_weights_must_name_every_class():
    cfg = small_config(Path("unused"), "seg.class_weight=[0.1,1]")
    with pytest.raises(ConfigError, match="2 weights for 11 classes"):
        Segmentation(cfg, _Session(), None, None, None, [str(i) for i in range(11)])


@pytest.mark.parametrize("overrides, message", [
    (["sched.iterations=1000"], "needs train.iterations_per_epoch"),
    (["sched.iterations=1000", "train.iterations_per_epoch=300"], "not a multiple"),
    (["train.iterations_per_epoch=300"], "set sched.iterations too"),
])  # fmt: skip
def test_iteration_schedules_refuse_what_does_not_add_up(overrides, message):
    cfg = load_config("upernet_digits", ["sched.iterations=null", "train.iterations_per_epoch=null", *overrides])
    with pytest.raises(ConfigError, match=message):
        resolve_iterations(cfg)


def test_evaluation_equals_counting_the_models_own_predictions():
    from swinkit.data.digit_scenes import DigitScenes
    from swinkit.data.segmentation import Pipeline, segmentation_loader

    cfg = small_config(Path("unused"))
    model = tiny_upernet(11)
    scenes = DigitScenes("val", length=6, size=32)
    pipeline = Pipeline(train=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    loader = segmentation_loader(scenes, pipeline, batch_size=4, train=False)
    result = evaluate_segmentation(model, loader, torch.device("cpu"), "fp32", 11, cfg.seg)
    total = torch.zeros(3, 11, dtype=torch.long)
    for i in range(len(scenes)):
        x, y = pipeline(scenes.load(i))
        with torch.no_grad():
            total += area_histograms(model(x[None]).argmax(1)[0], y, 11)
    assert result["n"] == 6 and result["mIoU"] == scores(total)["mIoU"]


def test_sliding_windows_and_flip_average_like_mmseg():
    model = tiny_upernet(5, auxiliary=False)
    cfg = small_config(Path("unused"), "seg.scale=null")
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(x)
        one_window = predict_logits(model, x, (64, 96), replace(cfg.seg, inference="slide", slide_crop=[64, 96]), 5)
        assert torch.allclose(one_window, whole, atol=1e-6)
        slide = replace(cfg.seg, inference="slide", slide_crop=[64, 64], slide_stride=[32, 32])
        windows = predict_logits(model, x, (64, 96), slide, 5)
        left, right = model(x[..., :64]), model(x[..., 32:])  # two windows, overlapping in columns 32-63
        expected = torch.zeros_like(whole)
        expected[..., :32], expected[..., 64:] = left[..., :32], right[..., 32:]
        expected[..., 32:64] = (left[..., 32:] + right[..., :32]) / 2
        assert torch.allclose(windows, expected, atol=1e-6)
        flipped = predict_logits(model, x, (64, 96), replace(cfg.seg, tta_flip=True), 5)
        mean = (whole.softmax(1) + model(x.flip(-1)).flip(-1).softmax(1)) / 2
        assert torch.allclose(flipped, mean, atol=1e-6)


class _Counting(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


@pytest.mark.parametrize("seg", [dict(), dict(tta_flip=True), dict(tta_ratios=[0.5, 1.0, 1.75]), SLIDING,
                                 dict(SLIDING, tta_ratios=[0.75, 1.5], scale=[96, 48])])  # fmt: skip
def test_forwards_counts_the_model_calls_of_a_prediction(seg):
    counting = _Counting(tiny_upernet())
    config = replace(SegConfig(), **seg)
    with torch.no_grad():
        for images, labels, _ in uneven_batches():
            counting.calls = 0
            predict_logits(counting, images, labels.shape[-2:], config, 5)
            assert counting.calls == forwards(images.shape, config)


@pytest.mark.slow
def test_sharded_evaluation_runs_in_step_over_uneven_shares_and_sizes(tmp_path):
    # Process 0 holds two images, process 1 one of another size; sliding windows and flip make their forward counts
    # differ batch by batch. Each FSDP forward is a collective: out of step, the run would hang or mix tensors.
    torchrun_program(str(REPO / "tests" / "segmentation_fsdp_worker.py"), str(tmp_path), cwd=tmp_path)
    expected = evaluate_segmentation(tiny_upernet(), uneven_batches(), torch.device("cpu"), "fp32", 5,
                                     replace(SegConfig(), **SLIDING))  # fmt: skip
    assert expected["n"] == 3
    for rank in range(2):  # the same pixels counted: the same scores, to the bit
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == json.loads(json.dumps(expected))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One small run, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("segmentation") / "full"
    train(small_config(out, "seg.val_scenes=9"))
    return out


@pytest.mark.slow
def test_a_run_evaluates_each_epoch_and_resumes_mid_epoch_to_the_same_weights(trained, tmp_path):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_miou" in r] == [4, 8, 12]
    assert all(0.0 <= r["val_miou"] <= 100.0 and not math.isnan(r["val_miou"]) for r in records)
    train(small_config(tmp_path / "cut", "seg.val_scenes=9", "train.stop_after_steps=6"))
    train(small_config(tmp_path / "cut", "seg.val_scenes=9"), resume=str(tmp_path / "cut"))
    a, _ = read_file(trained / "checkpoints" / "last" / "model.safetensors")
    b, _ = read_file(tmp_path / "cut" / "checkpoints" / "last" / "model.safetensors")
    assert state_dicts_equal(a, b)


@pytest.mark.slow
def test_eval_gives_the_runs_miou_in_one_and_two_processes(trained, tmp_path):
    last = trained / "checkpoints" / "last"
    logged = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()][-1]
    one = run_eval(small_config(trained, "seg.val_scenes=9"), str(last), output=str(tmp_path / "one"))
    assert one["n"] == 9 and one["mIoU"] == logged["val_miou"] and len(one["per_class"]) == 11
    torchrun("eval", "--config", "upernet_digits", "--checkpoint", str(last), "--output", str(tmp_path / "two"),
             *SMALL, "seg.val_scenes=9", cwd=tmp_path)  # fmt: skip
    two = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert two["n"] == 9 and (two["mIoU"], two["mAcc"], two["aAcc"]) == (one["mIoU"], one["mAcc"], one["aAcc"])
    assert two["confusion"] == one["confusion"] and sum(map(sum, one["confusion"])) == 9 * 32 * 32
    assert Image.open(tmp_path / "one" / "confusion.png").format == "PNG"


@pytest.mark.slow
def test_predict_writes_a_label_map_and_an_overlay(trained, tmp_path):
    best = trained / "checkpoints" / "best"
    out = tmp_path / "predictions"
    proc = subprocess.run([sys.executable, "-m", "swinkit", "predict", "--checkpoint", str(best), "--output",
                           str(out), str(REPO / "examples" / "digit-scene.png"), "missing.png"],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "missing.png" in proc.stderr  # the readable image is still predicted
    labels = Image.open(out / "digit-scene.labels.png")
    overlay = Image.open(out / "digit-scene.overlay.png")
    assert labels.mode == "P" and labels.size == (64, 64) and np.asarray(labels).max() < 11
    assert overlay.size[0] > 64 and "digit-scene.overlay.png" in proc.stdout


def test_a_classifier_refuses_an_iteration_schedule(tmp_path):
    from tests.engine_utils import tiny_config

    cfg = tiny_config(tmp_path / "run", "sched.iterations=100", "train.iterations_per_epoch=50")
    with pytest.raises(ConfigError, match="counts its schedule in passes over the data"):
        train(cfg)


def test_class_count_mismatch_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match="model.num_classes=11"):
        train(small_config(tmp_path / "run", "model.num_classes=12"))


def test_a_classifier_checkpoint_starts_the_backbone_of_a_run(tmp_path):
    from swinkit.checkpoints import save_checkpoint

    classifier = create_model("swin_tiny_patch4_window7_224", num_classes=7, embed_dim=16, depths=(2, 2, 2, 2),
                              num_heads=(1, 2, 4, 8), window_size=4)  # fmt: skip
    classifier = perturb_parameters(classifier, seed=5)
    save_checkpoint(classifier, tmp_path / "imagenet.pth", format="microsoft")
    cfg = small_config(tmp_path / "run", f"model.pretrained={tmp_path / 'imagenet.pth'}", "sched.iterations=4",
                       "sched.warmup_iterations=0", "optim.lr=0", "seg.val_scenes=2")  # fmt: skip
    train(cfg)
    trained, _ = read_file(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors")
    expected = {f"backbone.{k}": v for k, v in classifier.state_dict().items() if not k.startswith(("head.", "norm."))}
    assert all(torch.equal(trained[k], v) for k, v in expected.items() if "relative_position_index" not in k)


def test_the_curves_plot_draws_the_miou(tmp_path, monkeypatch):
    import matplotlib.axes

    from swinkit.engine.plot import plot_metrics

    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0, "val_miou": 12.5, "val_macc": 20.0}\n'
                                            '{"epoch": 2, "train_loss": 0.8, "val_miou": 20.0, "val_macc": 30.0}\n')
    drawn = []
    plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **k: drawn.append(k.get("label")) or plot(
        self, *a, **k))
    plot_metrics(tmp_path)
    assert {"mIoU", "mAcc"} <= set(drawn)


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_ade20k_configs_are_the_official_recipe(size):
    cfg = load_config(f"upernet_swin_{size}_512_ade20k")
    global_batch = cfg.data.batch_size * 8  # 8 GPUs, as published
    assert cfg.optim.lr * global_batch / cfg.optim.lr_base_batch == pytest.approx(6e-5) and global_batch == 16
    assert (cfg.optim.name, cfg.optim.weight_decay, cfg.model.drop_path_rate) == ("adamw", 0.01, 0.3)
    assert (cfg.sched.name, cfg.sched.iterations, cfg.sched.warmup_iterations, cfg.sched.power) == ("poly", 160000,
                                                                                                      1500, 1.0)
    assert (cfg.seg.crop_size, cfg.seg.scale, cfg.seg.ratio_range, cfg.seg.cat_max_ratio) == ([512, 512], [2048, 512],
                                                                                              [0.5, 2.0], 0.75)
    assert cfg.seg.reduce_zero_label and cfg.data.hflip == 0.5 and cfg.seg.photometric
    assert get_weights(cfg.model.pretrained).num_classes == 1000  # the official ImageNet-1k backbone


def test_the_ade20k_recipe_runs_on_an_ade20k_folder(tmp_path):
    # The shipped config with a small model and a few iterations, on scenes written in ADE20K's layout: label 0 is
    # "other" (ignored), the digit scenes' classes shift up by one.
    scenes = DigitScenes("train", length=6, size=48)
    for split, indices in (("training", range(4)), ("validation", range(4, 6))):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "annotations" / split).mkdir(parents=True)
        for i in indices:
            image, labels = scenes.load(i)
            image.save(tmp_path / "images" / split / f"ADE_{i}.jpg")
            ade = Image.fromarray((np.asarray(labels) + 1).astype(np.uint8))
            ade.save(tmp_path / "annotations" / split / f"ADE_{i}.png")
    out = tmp_path / "run"
    cfg = load_config("upernet_swin_tiny_512_ade20k", [
        f"data.root={tmp_path}", f"train.output={out}", "model.pretrained=null", "model.embed_dim=16",
        "model.depths=[2,2,2,2]", "model.num_heads=[1,2,4,8]",
        "model.window_size=4", "head.channels=16", "head.auxiliary_channels=8", "data.workers=0", "train.threads=1",
        "seg.crop_size=[32,32]", "seg.scale=[64,32]", "sched.iterations=4", "sched.warmup_iterations=2",
        "train.iterations_per_epoch=2", "train.precision=fp32", "train.device=cpu",
    ])  # fmt: skip
    train(cfg)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4] and all(0 <= r["val_miou"] <= 100 for r in records)
    report = (out / "val_per_class.txt").read_text().splitlines()
    assert report[0].startswith("epoch 2 (step 4)") and len(report) == 1 + 1 + 150 + 1  # header, columns, classes, mIoU
    assert report[2].split()[0] == "wall" and Image.open(out / "val_confusion.png").size[0] > 500

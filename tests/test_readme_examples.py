"""The README's worked examples of the timm interface run as written: Mask R-CNN on a swinkit backbone (a training
step and an inference), torchvision's create_feature_extractor, and timm's data config."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Detection, segmentation and feature extraction"


def _examples() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION) + len(SECTION)
    end = start + re.search(r"\n#{2,3} ", text[start:]).start()  # the next heading (code comments are "# ...")
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_the_section_has_its_three_examples():
    assert len(_examples()) == 3


def test_mask_rcnn_on_a_swinkit_backbone_trains_a_step_and_detects():
    namespace: dict = {}
    torch.manual_seed(0)
    exec(_examples()[0], namespace)
    losses = namespace["losses"]
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    backbone = namespace["detector"].backbone.body
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in backbone.parameters() if p.requires_grad)
    detections = namespace["detections"]
    assert len(detections) == 2 and {"boxes", "labels", "scores", "masks"} <= set(detections[0])


def test_create_feature_extractor_and_data_config_examples():
    namespace: dict = {}
    exec(_examples()[1], namespace)
    assert namespace["shapes"] == {"stride8": (2, 32, 32, 192), "stride32": (2, 8, 8, 768), "final": (2, 8, 8, 768)}
    assert isinstance(namespace["graph"], torch.fx.GraphModule)
    namespace = {}
    exec(_examples()[2], namespace)
    assert namespace["config"] == {
        "input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center",
    }  # fmt: skip
    assert namespace["transform"](Image.new("RGB", (300, 260))).shape == (3, 224, 224)

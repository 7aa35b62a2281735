"""Layout detection is decisive: every detector on every layout (the full cross table), for every family it holds."""

from __future__ import annotations

import pytest

import swinkit
from swinkit.checkpoints import CheckpointError, detect_format, load_checkpoint
from swinkit.checkpoints import ssl as ssl_layout
from swinkit.checkpoints.layouts import LAYOUTS, from_swinkit
from swinkit.checkpoints.mindspore_ckpt import read_ckpt

from .conftest import tiny_overrides

FAMILY_MODELS = {"swin": "swin_tiny_patch4_window7_224", "swinv2": "swinv2_tiny_window8_256", "cswin": "cswin_tiny_224"}
CASES = [
    (family, fmt, variant)
    for family in FAMILY_MODELS
    for fmt, layout in LAYOUTS.items()
    if family in layout.FAMILIES
    for variant in (layout.VARIANTS or (None,))
    if not (variant == "mindcv" and family != "swinv2")
]


def _model(family: str):
    name = FAMILY_MODELS[family]
    return swinkit.create_model(name, **tiny_overrides(name))


@pytest.mark.parametrize("family, fmt, variant", CASES, ids=[f"{f}-{m}-{v}" for f, m, v in CASES])
def test_exactly_one_detector_matches_each_layout(family, fmt, variant):
    model = _model(family)
    state = from_swinkit(model, fmt, variant)
    if fmt == "mindspore":
        # MindSpore 2.x names nested cells by position; the detector must see through it.
        state = {k.replace("layers.1.blocks.", "0.blocks.1.blocks."): v for k, v in state.items()}
    matches = {name for name, layout in LAYOUTS.items() if layout.detect(state)}
    assert matches == {fmt}
    assert detect_format(state) == fmt and ssl_layout.detect(state) is None
    fresh = _model(family)
    report = load_checkpoint(fresh, state)
    assert report.format == fmt and not report.missing and not report.unexpected


@pytest.mark.parametrize("family", FAMILY_MODELS)
def test_swinkit_names_read_as_timm_and_ssl_wrappers_as_ssl(family):
    state = _model(family).state_dict()
    assert {name for name, layout in LAYOUTS.items() if layout.detect(state)} == {"timm"}
    wrapped = {f"encoder.{k}": v for k, v in state.items()} | {"decoder.0.weight": state["head.fc.weight"]}
    assert ssl_layout.detect(wrapped) == "simmim"
    assert not any(layout.detect(wrapped) for layout in LAYOUTS.values())


def test_two_matching_layouts_are_refused():
    timm_state = _model("swinv2").state_dict()
    torchvision_state = from_swinkit(_model("swinv2"), "torchvision")
    with pytest.raises(CheckpointError, match="several layouts \\(timm, torchvision\\)"):
        detect_format({**timm_state, **torchvision_state})


def test_a_mindspore_file_is_detected_after_reading(tmp_path):
    path = swinkit.save_checkpoint(_model("swinv2"), tmp_path / "m.ckpt", format="mindspore")
    assert detect_format(read_ckpt(path)) == "mindspore"

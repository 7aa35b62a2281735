"""Official Transformer-SSL (MoBY) and SimMIM checkpoints load as the full meta-architecture and as a backbone."""

from __future__ import annotations

import re

import pytest
import torch

import swinkit
from swinkit.checkpoints import CheckpointError
from swinkit.tools.peers import perturb_parameters
from tests.ssl_utils import ARCH, tiny_moby, tiny_simmim

V1 = "swin_tiny_patch4_window7_224"


def _to_official(encoder_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """swinkit (timm) Swin layout -> microsoft's: merging at the end of the previous stage, derived buffers saved."""
    out = {}
    for key, value in encoder_state.items():
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", key)
        out[key] = value.clone()
    out["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)
    return out


def _official_moby_checkpoint(tmp_path):
    """A Transformer-SSL-style checkpoint: {'model': encoder.*, encoder_k.*, projector*, predictor.*, queues, ...}."""
    source = tiny_moby(name=V1)
    perturb_parameters(source.encoder, seed=1)
    perturb_parameters(source.encoder_k, seed=2)  # the target differs from the online encoder
    perturb_parameters(source.projector, seed=3)
    with torch.no_grad():
        source.queue1.normal_()
        source.queue_ptr.fill_(8)
    state = source.state_dict()
    model = {}
    for prefix in ("encoder.", "encoder_k."):
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        model.update({prefix + k: v for k, v in _to_official(part).items()})
    model.update({k: v for k, v in state.items() if not k.startswith(("encoder.", "encoder_k."))})
    path = tmp_path / "moby_swin_tiny_300ep.pth"
    torch.save({"model": model, "optimizer": {}, "epoch": 299, "max_accuracy": 0.0}, path)
    return source, path


def test_official_moby_checkpoint_loads_as_a_backbone(tmp_path):
    source, path = _official_moby_checkpoint(tmp_path)
    backbone = swinkit.create_model(V1, **ARCH, num_classes=10)
    head = backbone.head.fc.weight.clone()
    report = swinkit.load_checkpoint(backbone, path)
    assert "moby encoder" in report.source and report.format == "microsoft"
    got = backbone.state_dict()
    for k, v in source.encoder.state_dict().items():
        assert torch.equal(got[k], v), k  # the online encoder, not encoder_k
    assert torch.equal(backbone.head.fc.weight, head)  # no classifier in pretraining: the fresh head stays
    assert any(k.startswith("encoder_k.") for k in report.dropped) and "queue1" in report.dropped


def test_official_moby_checkpoint_loads_as_moby(tmp_path):
    source, path = _official_moby_checkpoint(tmp_path)
    model = tiny_moby(seed=5, name=V1)
    swinkit.load_checkpoint(model, path)
    got, expected = model.state_dict(), source.state_dict()
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(got[k], v), k


def test_moby_checkpoint_with_another_queue_size_is_refused(tmp_path):
    _, path = _official_moby_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="queue size"):
        swinkit.load_checkpoint(tiny_moby(name=V1, queue_size=32), path)


def test_backbone_checkpoint_initialises_both_moby_encoders(tmp_path):
    backbone = swinkit.create_model(V1, **ARCH, num_classes=10)
    perturb_parameters(backbone, seed=1)
    torch.save(backbone.state_dict(), tmp_path / "supervised.pth")
    model = tiny_moby(name=V1)
    swinkit.load_checkpoint(model, tmp_path / "supervised.pth")
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, backbone.state_dict()[k]) and torch.equal(model.encoder_k.state_dict()[k], v), k


def test_official_simmim_checkpoint_loads_both_ways(tmp_path):
    source = tiny_simmim(name=V1)
    perturb_parameters(source, seed=1)
    state = source.state_dict()
    encoder = _to_official({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")})
    official = {f"encoder.{k}": v for k, v in encoder.items()}
    official["encoder.mask_token"] = state["mask_token"]
    official.update({k: v for k, v in state.items() if k.startswith("decoder.")})
    torch.save({"model": official, "epoch": 99}, tmp_path / "simmim.pth")

    model = tiny_simmim(seed=3, name=V1)
    swinkit.load_checkpoint(model, tmp_path / "simmim.pth")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())

    backbone = swinkit.create_model(V1, **ARCH, num_classes=0)
    report = swinkit.load_checkpoint(backbone, tmp_path / "simmim.pth")
    assert "encoder.mask_token" in report.dropped and "decoder.0.weight" in report.dropped
    assert all(torch.equal(backbone.state_dict()[k], v) for k, v in source.encoder.state_dict().items())

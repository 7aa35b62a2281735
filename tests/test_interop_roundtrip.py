"""Writing every layout: swinkit -> format -> swinkit is exact, and the peers accept what swinkit writes."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
import transformers
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

import swinkit
from swinkit.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from swinkit.checkpoints.layouts import from_swinkit
from swinkit.checkpoints.pdparams import PDPARAMS_NAME_TABLE, read_pdparams

from .conftest import tiny_overrides

CASES = [
    ("swinv2_tiny_window8_256", "swinkit", "model.safetensors"),
    ("swinv2_tiny_window8_256", "timm", "model.safetensors"),
    ("swinv2_tiny_window8_256", "microsoft", "model.pth"),
    ("swinv2_tiny_window8_256", "hf", "model.safetensors"),
    ("swinv2_tiny_window8_256", "torchvision", "model.pth"),
    ("swinv2_tiny_window8_256", "mindspore", "model.ckpt"),
    ("swinv2_tiny_window8_256", "paddle", "model.pdparams"),
    ("swin_tiny_patch4_window7_224", "microsoft", "model.bin"),
    ("swin_tiny_patch4_window7_224", "hf", "model.safetensors"),
    ("swin_tiny_patch4_window7_224", "torchvision", "model.pth"),
    ("swin_tiny_patch4_window7_224", "mindspore", "model.ckpt"),
    ("swin_tiny_patch4_window7_224", "paddle", "model.pdparams"),
    ("cswin_tiny_224", "microsoft", "model.pth"),
    ("cswin_tiny_224", "mindspore", "model.ckpt"),
    ("cswin_tiny_224", "paddle", "model.pdparams"),
]


@pytest.mark.parametrize("name, fmt, filename", CASES, ids=[f"{n.split('_')[0]}-{f}" for n, f, _ in CASES])
def test_round_trip_is_exact(name, fmt, filename, tiny_model, tmp_path):
    source = tiny_model(name, seed=0)
    path = save_checkpoint(source, tmp_path / filename, format=fmt)
    target = tiny_model(name, seed=1)
    report = load_checkpoint(target, path)
    assert report.format == fmt and not report.missing and not report.unexpected
    expected = source.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in target.state_dict().items())


def test_mindcv_numerics_survive_a_swinkit_file(tmp_path):
    kwargs = dict(tiny_overrides("swinv2_tiny_window8_256"), norm_eps=1e-6, gelu_approximate="tanh")
    path = save_checkpoint(swinkit.create_model("swinv2_tiny_window8_256", **kwargs), tmp_path / "m.safetensors")
    target = swinkit.create_model("swinv2_tiny_window8_256", **tiny_overrides("swinv2_tiny_window8_256"))
    report = load_checkpoint(target, path)
    assert target.norm.eps == 1e-6 and any("GELU" in note for note in report.adapted)


@pytest.mark.parametrize("fmt", ["timm", "hf", "torchvision"])
def test_cswin_cannot_be_written_where_it_does_not_exist(fmt, tiny_model, tmp_path):
    with pytest.raises(CheckpointError, match="no CSWin"):
        save_checkpoint(tiny_model("cswin_tiny_224"), tmp_path / "m.pth", format=fmt)


class _RecordingUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.globals: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str):
        self.globals.add((module, name))
        return super().find_class(module, name)


@pytest.mark.parametrize("name", ["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "cswin_tiny_224"])
def test_paddle_file_is_a_state_dict_as_paddle_save_writes_it(name, tiny_model, tmp_path):
    source = tiny_model(name)
    path = save_checkpoint(source, tmp_path / "model.pdparams", format="paddle")
    unpickler = _RecordingUnpickler(path.read_bytes())
    unpickler.load()
    # No numpy.core / numpy._core path: PaddleClas's numpy 1 and swinkit's numpy 2 both read it.
    assert unpickler.globals == {("numpy", "ndarray"), ("numpy", "dtype")}
    raw = read_pdparams(path)
    arrays = {k: v for k, v in raw.items() if k != PDPARAMS_NAME_TABLE}
    assert raw[PDPARAMS_NAME_TABLE] == {k: k for k in arrays}
    assert all(isinstance(v, torch.Tensor) for v in arrays.values())
    fc1 = "stages.0.blocks.0.mlp.fc1.weight" if name.startswith("cswin") else "layers.0.blocks.0.mlp.fc1.weight"
    assert torch.equal(arrays[fc1], source.state_dict()["layers.0.blocks.0.mlp.fc1.weight"].t())  # [in, out]


def test_paddle_file_needs_the_pdparams_suffix(tiny_model, tmp_path):
    with pytest.raises(ValueError, match=r"\.pdparams"):
        save_checkpoint(tiny_model("swinv2_tiny_window8_256"), tmp_path / "model.pth", format="paddle")


def test_hf_file_loads_strictly_into_transformers_and_gives_the_same_logits(tiny_model):
    source = tiny_model("swinv2_tiny_window8_256").eval()
    config = transformers.Swinv2Config(
        image_size=64, embed_dim=16, depths=[2, 2, 1, 1], num_heads=[1, 2, 2, 4], window_size=4, num_labels=7
    )
    peer = transformers.Swinv2ForImageClassification(config).eval()
    peer.load_state_dict(from_swinkit(source, "hf"), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(peer(pixel_values=x).logits, source(x), rtol=1e-4, atol=1e-4)


def test_torchvision_file_loads_strictly_into_torchvision(tiny_model):
    source = tiny_model("swinv2_tiny_window8_256", img_size=256, window_size=8)
    peer = SwinTransformer(
        [4, 4], 16, [2, 2, 1, 1], [1, 2, 2, 4], window_size=[8, 8], block=SwinTransformerBlockV2,
        downsample_layer=PatchMergingV2, num_classes=7,
    ).eval()  # fmt: skip
    peer.load_state_dict(from_swinkit(source, "torchvision"), strict=True)
    # Stages 1-2 (64x64 and 32x32 maps at 256 px) need no clamping or padding: both compute the same thing there.
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(peer.features[:4](x), source.layers[1](source.layers[0](source.patch_embed(x))))

"""Fine-tuning starts from the right weights: a 22k-style checkpoint through a label map, another window size.

The learning rate is 0 for these runs, so the weights saved after one step are exactly the ones training started
from.
"""

from __future__ import annotations

import io

import pytest
import torch

import swinkit
from swinkit.checkpoints.io import read_file
from swinkit.checkpoints.layouts import from_swinkit
from swinkit.checkpoints.transfer import resize_bias_table
from swinkit.engine.train import train
from tests.engine_utils import tiny_config
from tests.loopback import LoopbackServer

ARCH = dict(patch_size=4, embed_dim=8, depths=(1, 1), num_heads=(1, 2), drop_path_rate=0.0)
FROZEN = ("optim.lr=0", "sched.warmup_lr=0", "sched.min_lr=0", "train.stop_after_steps=1")


def _pretrained(name: str, seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = swinkit.create_model(name, **{**ARCH, **kwargs})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # away from the init, so a fresh model cannot pass for it
    return model.state_dict()


def _started_from(run_dir) -> dict[str, torch.Tensor]:
    state, _ = read_file(run_dir / "checkpoints" / "last" / "model.safetensors")
    return state


def test_finetune_from_22k_style_checkpoint_with_label_map(tmp_path):
    src = _pretrained("swinv2_tiny_window8_256", img_size=16, window_size=2, num_classes=40)
    path = tmp_path / "pretrained_22k.pth"
    torch.save({"model": src, "epoch": 90}, path)  # an official-style container with a 40-class "22k" head
    label_map = [4 * i + 1 for i in range(10)]  # digit class i <- source class 4i+1
    (tmp_path / "map.txt").write_text("\n".join(map(str, label_map)) + "\n")
    out = tmp_path / "run"
    train(tiny_config(out, f"model.pretrained={path}", f"model.label_map={tmp_path / 'map.txt'}", *FROZEN))
    got = _started_from(out)
    assert got.keys() == src.keys()
    for k, v in src.items():
        expected = v[label_map] if k.startswith("head.fc.") else v
        assert torch.equal(got[k], expected), k


def test_finetune_with_head_reset_keeps_backbone(tmp_path):
    src = _pretrained("swinv2_tiny_window8_256", img_size=16, window_size=2, num_classes=40)
    torch.save(src, tmp_path / "src.pth")
    out = tmp_path / "run"
    train(tiny_config(out, f"model.pretrained={tmp_path / 'src.pth'}", "model.head=reset", *FROZEN))
    got = _started_from(out)
    assert got["head.fc.weight"].shape == (10, 16)
    assert all(torch.equal(got[k], v) for k, v in src.items() if not k.startswith("head."))


def test_finetune_v2_at_a_larger_window_and_size(tmp_path):
    """Window 2 at 16 px -> window 4 at 32 px: the continuous position bias needs no weight changes."""
    src = _pretrained("swinv2_tiny_window8_256", img_size=16, window_size=2, num_classes=10)
    torch.save(src, tmp_path / "w2.pth")
    out = tmp_path / "run"
    train(tiny_config(out, f"model.pretrained={tmp_path / 'w2.pth'}", "model.img_size=32", "model.window_size=4",
                      "model.pretrained_window_sizes=[2, 2]", *FROZEN))  # fmt: skip
    got = _started_from(out)
    assert got.keys() == src.keys() and all(torch.equal(got[k], v) for k, v in src.items())


@pytest.mark.slow
def test_finetune_v1_resizes_the_bias_table(tmp_path):
    src = _pretrained("swin_tiny_patch4_window7_224", img_size=16, window_size=2, num_classes=10)
    torch.save(src, tmp_path / "v1.pth")
    out = tmp_path / "run"
    train(tiny_config(out, "model.name=swin_tiny_patch4_window7_224", f"model.pretrained={tmp_path / 'v1.pth'}",
                      "model.img_size=32", "model.window_size=4", *FROZEN))  # fmt: skip
    got = _started_from(out)
    for k, v in src.items():
        if k.endswith("relative_position_bias_table"):
            assert got[k].shape == (49, v.shape[1])
            torch.testing.assert_close(got[k], resize_bias_table(v, (4, 4)))
        elif k in got:
            assert torch.equal(got[k], v), k


def test_finetune_from_a_published_tag_fetched_through_the_mirror(tmp_path, monkeypatch):
    # model.pretrained may name a tag: the engine fetches it into the cache (the first process under torchrun), then
    # loads it as a file. The tag's weights here are a tiny stand-in served in the official layout.
    src = _pretrained("swinv2_tiny_window8_256", img_size=16, window_size=2, num_classes=40)
    release = "/gh/SwinTransformer/storage/releases/download/v2.0.0/swinv2_tiny_patch4_window8_256.pth"
    model = swinkit.create_model("swinv2_tiny_window8_256", **{**ARCH, "img_size": 16, "window_size": 2,
                                                               "num_classes": 40})  # fmt: skip
    model.load_state_dict(src)
    buffer = io.BytesIO()
    torch.save({"model": from_swinkit(model, "microsoft")}, buffer)
    with LoopbackServer() as server:
        server.files[release] = buffer.getvalue()
        monkeypatch.setenv("SWINKIT_GITHUB_MIRROR", f"{server.url}/gh/")
        out = tmp_path / "run"
        train(tiny_config(out, "model.pretrained=in1k", "model.head=reset", *FROZEN))
        assert server.gets(release) == 1
    got = _started_from(out)
    assert all(torch.equal(got[k], v) for k, v in src.items() if not k.startswith("head."))

"""MoBY: the target branch, the momentum schedule, the symmetric loss, the FIFO queues, gathered keys under DDP."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from swinkit.ssl import MoBY, momentum_at
from swinkit.tools.peers import perturb_parameters
from tests.engine_utils import REPO, torchrun_program
from tests.ssl_utils import tiny_moby


def _views(batch: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 16, 16, generator=g), torch.randn(batch, 3, 16, 16, generator=g)


def _target_params(model: MoBY) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if n.startswith(("encoder_k.", "projector_k."))}


def test_target_branch_gets_no_gradients():
    model = tiny_moby()
    model(*_views()).backward()
    target = _target_params(model)
    assert target and all(not p.requires_grad and p.grad is None for p in target.values())
    online = [(n, p) for n, p in model.named_parameters() if n not in target]
    assert {n.split(".")[0] for n, _ in online} == {"encoder", "projector", "predictor"}
    assert all(p.grad is not None for _, p in online)


def test_after_one_step_target_is_the_momentum_average_of_online():
    model = tiny_moby()
    perturb_parameters(model.encoder, seed=1)  # online != target, so the average is not trivially either of them
    perturb_parameters(model.projector, seed=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    m = 0.9
    model(*_views(), momentum=m).backward()
    optimizer.step()
    for name, p in _target_params(model).items():
        online = name.replace("encoder_k.", "encoder.", 1).replace("projector_k.", "projector.", 1)
        expected = m * before[name] + (1 - m) * before[online]
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6, msg=name)
    # The optimizer moved the online branch and left the target alone.
    assert not torch.equal(model.encoder.patch_embed.proj.weight, before["encoder.patch_embed.proj.weight"])


QUARTER = 1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2


@pytest.mark.parametrize("step, expected", [(0, 0.99), (50, 0.995), (100, 1.0), (25, QUARTER)])
def test_momentum_schedule_follows_the_cosine(step, expected):
    assert momentum_at(step, 100, 0.99) == pytest.approx(expected, abs=1e-12)


def test_momentum_is_applied_before_the_target_forward():
    """The keys are computed with the updated target: with momentum 0 the target becomes the online branch."""
    model = tiny_moby()
    perturb_parameters(model.encoder, seed=1)
    a, b = _views()
    model.eval()  # BatchNorm from running statistics, nothing enqueued
    loss = model(a, b, momentum=0.0)
    with torch.no_grad():
        pred = [F.normalize(model.predictor(model.projector(model.encoder(v))), dim=1) for v in (a, b)]
        keys = [F.normalize(model.projector(model.encoder(v)), dim=1) for v in (a, b)]
        expected = model.contrastive_loss(pred[0], keys[1], model.queue2) + model.contrastive_loss(
            pred[1], keys[0], model.queue1
        )
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_loss_is_symmetric_in_the_two_views():
    model = tiny_moby()
    perturb_parameters(model.encoder, seed=1)
    with torch.no_grad():
        model.queue2.copy_(model.queue1)
    a, b = _views()
    loss_ab = copy.deepcopy(model)(a, b)
    loss_ba = copy.deepcopy(model)(b, a)
    torch.testing.assert_close(loss_ab, loss_ba, rtol=1e-6, atol=1e-6)
    assert loss_ab.item() > 0


def test_loss_is_the_sum_of_two_infonce_terms():
    model = tiny_moby(temperature=0.5)
    q, k = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ model.queue1], dim=1) / 0.5
    expected = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    torch.testing.assert_close(model.contrastive_loss(q, k, model.queue1), expected)


def test_queues_are_fifo():
    model = tiny_moby()  # queue of 16 keys, batches of 4
    batches = [(F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)) for _ in range(5)]
    for i, (k1, k2) in enumerate(batches[:4]):
        model.enqueue(k1, k2)
        assert int(model.queue_ptr) == (4 * (i + 1)) % 16
    torch.testing.assert_close(model.queue1, torch.cat([k1 for k1, _ in batches[:4]]).T)
    torch.testing.assert_close(model.queue2, torch.cat([k2 for _, k2 in batches[:4]]).T)
    model.enqueue(*batches[4])  # the oldest batch goes first
    torch.testing.assert_close(model.queue1, torch.cat([batches[4][0], *[k1 for k1, _ in batches[1:4]]]).T)
    assert int(model.queue_ptr) == 4


def test_forward_enqueues_this_steps_target_keys():
    model = tiny_moby()
    a, b = _views()
    model(a, b)
    with torch.no_grad():  # the target branch is unchanged after the forward, and BatchNorm uses batch statistics
        keys = [F.normalize(model.projector_k(model.encoder_k(v)), dim=1) for v in (a, b)]
    torch.testing.assert_close(model.queue1[:, :4], keys[0].T)
    torch.testing.assert_close(model.queue2[:, :4], keys[1].T)
    assert int(model.queue_ptr) == 4


def test_queue_must_be_a_multiple_of_the_batch():
    model = tiny_moby()
    with pytest.raises(ValueError, match="multiple of the global batch"):
        model.enqueue(torch.randn(3, 8), torch.randn(3, 8))


def test_asymmetric_drop_path():
    from swinkit.ssl import build_moby
    from tests.ssl_utils import ARCH, HEADS

    model = build_moby("swinv2_tiny_window8_256", drop_path_rate=0.2, backbone_kwargs=ARCH, **HEADS)
    online = [m.drop_prob for m in model.encoder.modules() if type(m).__name__ == "DropPath"]
    target = [m.drop_prob for m in model.encoder_k.modules() if type(m).__name__ == "DropPath"]
    assert max(online) == pytest.approx(0.2) and max(target) == 0.0


def test_timm_backbone():
    from swinkit.ssl import build_moby

    model = build_moby("timm:deit_tiny_patch16_224", backbone_kwargs=dict(img_size=32, depth=1), queue_size=16,
                       proj_dim=8, hidden_dim=32)  # fmt: skip
    assert model.num_features == 192
    loss = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert not any(p.requires_grad for p in model.encoder_k.parameters())
    assert "encoder.pos_embed" in model.no_weight_decay()


def test_official_mlp_key_layout():
    keys = set(tiny_moby().state_dict())
    for prefix in ("projector.", "projector_k.", "predictor."):
        assert {f"{prefix}linear_hidden.1.weight", f"{prefix}linear_hidden.2.running_mean",
                f"{prefix}linear_out.weight"} <= keys  # fmt: skip
    assert {"queue1", "queue2", "queue_ptr"} <= keys
    assert any(k.startswith("encoder_k.") for k in keys)


@pytest.mark.slow
def test_two_process_ddp_enqueues_the_keys_of_both_processes(tmp_path):
    torchrun_program(str(REPO / "tests" / "ssl_ddp_worker.py"), str(tmp_path), cwd=tmp_path)
    out = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert not torch.equal(out[0]["key1"], out[1]["key1"])  # each process saw its own images
    gathered1 = torch.cat([o["key1"] for o in out])  # rank order
    gathered2 = torch.cat([o["key2"] for o in out])
    for o in out:
        assert int(o["queue_ptr"]) == 8
        torch.testing.assert_close(o["queue1"][:, :8], gathered1.T)
        torch.testing.assert_close(o["queue2"][:, :8], gathered2.T)
        torch.testing.assert_close(o["queue1"][:, 8:], out[0]["queue1"][:, 8:])  # untouched initial keys

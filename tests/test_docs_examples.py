"""Every Python code block of the README and the docs runs as written, and says what it claims.

The blocks that load published weights run offline against a weights cache filled the way an air-gapped cluster
fills it (files placed by hand at the paths the cache uses, and the Hugging Face cache's own layout), with random
weights in each source's real format: the blocks' code paths are the real ones, only the network is not.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import swinkit
from swinkit.hub import get_weights
from swinkit.hub.download import cached_path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


def _section(page: str, heading: str) -> list[str]:
    text = (REPO / "docs" / page).read_text()
    start = text.index(heading) + len(heading)
    match = re.search(r"\n#{2,3} ", text[start:])  # the next heading (code comments are "# ...")
    return re.findall(r"```python\n(.*?)```", text[start : start + match.start() if match else None], flags=re.DOTALL)


def test_every_python_block_is_one_a_test_runs():
    """A new block must get its test here: the counts are the blocks the tests below run."""
    counts = {page.relative_to(REPO).as_posix(): len(_blocks(page)) for page in PAGES if _blocks(page)}
    assert counts == {"README.md": 1, "docs/detection.md": 1, "docs/models.md": 5, "docs/segmentation.md": 1,
                      "docs/ssl.md": 1}  # fmt: skip


def test_the_readme_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(_blocks(REPO / "README.md")[0], namespace)
    assert namespace["logits"].shape == (2, 10)
    assert [m.shape[-1] for m in namespace["maps"]] == [56, 28, 14, 7]
    assert namespace["report"].loaded and not namespace["report"].missing


def test_mask_rcnn_on_a_swinkit_backbone_trains_a_step_and_detects():
    namespace: dict = {}
    torch.manual_seed(0)
    exec(_section("models.md", "### Detection, segmentation and feature extraction")[0], namespace)
    losses = namespace["losses"]
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    backbone = namespace["detector"].backbone.body
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in backbone.parameters() if p.requires_grad)
    detections = namespace["detections"]
    assert len(detections) == 2 and {"boxes", "labels", "scores", "masks"} <= set(detections[0])


def test_create_feature_extractor_and_data_config_examples():
    blocks = _section("models.md", "### Detection, segmentation and feature extraction")
    namespace: dict = {}
    exec(blocks[1], namespace)
    assert namespace["shapes"] == {"stride8": (2, 32, 32, 192), "stride32": (2, 8, 8, 768), "final": (2, 8, 8, 768)}
    assert isinstance(namespace["graph"], torch.fx.GraphModule)
    namespace = {}
    exec(blocks[2], namespace)
    assert namespace["config"] == {
        "input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center",
    }  # fmt: skip
    assert namespace["transform"](Image.new("RGB", (300, 260))).shape == (3, 224, 224)


# --- the blocks that load published weights, against a cache filled by hand ------------------------------------------
def _place_url_weights(model: str, tag: str | None, **overrides) -> None:
    """Random weights of ``model``'s tag in its source's layout, where the cache keeps its URL's download."""
    weights = get_weights(model, tag)
    path = cached_path(weights.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = swinkit.create_model(weights.model, num_classes=weights.num_classes, **overrides)
    swinkit.save_checkpoint(net, path, format=weights.format)


def _place_hub_weights(hf_home: Path, model: str, tag: str) -> None:
    """Random weights of a Hub tag in the Hugging Face cache's layout (refs/main -> snapshots/<commit>/file)."""
    weights = get_weights(model, tag)
    repo = hf_home / "hub" / f"models--{weights.hub_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    net = swinkit.create_model(weights.model, num_classes=weights.num_classes)
    swinkit.save_checkpoint(net, repo / "snapshots" / commit / "model.safetensors", format=weights.format)


@pytest.fixture
def offline_weights(tmp_path, monkeypatch):
    """An air-gapped machine's caches holding every tag the blocks name, and the files they name in the cwd."""
    monkeypatch.setenv("SWINKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("SWINKIT_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    _place_url_weights("swinv2_tiny_window8_256", None)
    _place_url_weights("swin_tiny_patch4_window7_224", "in22k")
    _place_url_weights("swinv2_base_window12_192", "in22k")
    _place_hub_weights(tmp_path / "hf", "swinv2_tiny_window8_256", "timm_ms_in1k")
    _place_hub_weights(tmp_path / "hf", "swinv2_tiny_window8_256", "hf_in1k")
    swin_t = swinkit.create_model("swin_tiny_patch4_window7_224")
    swinkit.save_checkpoint(swin_t, tmp_path / "mine.pth", format="microsoft")
    s3_copy = cached_path("s3://bucket/w.pth")
    s3_copy.parent.mkdir(parents=True)
    swinkit.save_checkpoint(swin_t, s3_copy, format="microsoft")
    official = swinkit.create_model("swinv2_tiny_window8_256")
    swinkit.save_checkpoint(official, tmp_path / "swinv2_tiny_patch4_window8_256.pth", format="microsoft")
    return tmp_path


@pytest.mark.slow
def test_the_python_api_and_pretrained_weights_blocks(offline_weights):
    api, weights = _section("models.md", "## Python API")[0], _section("models.md", "## Pretrained weights")[0]
    namespace: dict = {"images": torch.randn(2, 3, 256, 256)}
    exec(api, namespace)
    assert namespace["logits"].shape == (2, 1000) and namespace["report"].loaded
    assert namespace["backbone"].feature_info.channels() == [192, 384, 768]
    namespace = {"swinkit": swinkit}
    exec(weights, namespace)
    assert namespace["model"].load_report.loaded  # the last model, from the s3:// copy
    assert {w.tag for w in swinkit.list_weights("swinv2_tiny_window8_256")} >= {"in1k", "hf_in1k", "timm_ms_in1k"}


@pytest.mark.slow
def test_the_ssl_block():
    namespace: dict = {"view1": torch.randn(2, 3, 224, 224), "view2": torch.randn(2, 3, 224, 224), "step": 10,
                       "total_steps": 100, "images": torch.randn(2, 3, 192, 192)}  # fmt: skip
    exec(_blocks(REPO / "docs" / "ssl.md")[0], namespace)
    assert namespace["loss"].ndim == 0 and torch.isfinite(namespace["loss"])


def test_the_segmentation_block():
    namespace: dict = {}
    exec(_blocks(REPO / "docs" / "segmentation.md")[0], namespace)
    assert namespace["logits"].shape == (1, 150, 512, 683) and namespace["labels"].shape == (1, 512, 683)


def test_the_detection_block():
    namespace: dict = {}
    torch.manual_seed(0)
    exec(_blocks(REPO / "docs" / "detection.md")[0], namespace)
    found = namespace["found"]
    assert set(found) == {"boxes", "labels", "scores", "masks"} and found["masks"].shape[1:] == (1, 480, 640)
    assert namespace["model"].num_classes == 80


def test_the_readme_stays_short_and_every_number_names_its_source():
    """The README says what swinkit is and links the pages; measured numbers live on pages that name their command."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    assert not re.search(r"\d+\.\d+ ?(%|img/s|GiB|MB\b)", readme)  # no measurement typed into the README
    for page in ("performance.md", "data.md", "quickstart.md"):
        text = (REPO / "docs" / page).read_text()
        assert re.search(r"benchmarks/\w+\.py|--8<-- \"benchmarks/", text), page


def test_every_included_table_says_when_where_and_by_which_command_it_was_measured():
    """The pages include the benchmark scripts' output as written; each file opens with its date, machine and
    command (``benchmarks/recorded.py``, or the script's own header), so no table is typed by hand."""
    included = set()
    for page in (REPO / "docs").glob("*.md"):
        included |= set(re.findall(r'^--8<-- "([^"]+)"', page.read_text(), flags=re.M))
    assert {"benchmarks/results.md", "benchmarks/kernel_results.md", "benchmarks/plan_results.md",
            "benchmarks/ssl_results.md"} <= included  # fmt: skip
    for name in included:
        first = (REPO / name).read_text().splitlines()[0]
        assert re.match(r"Measured \d{4}-\d\d-\d\d on .+, by `python benchmarks/\w+\.py", first), (name, first)

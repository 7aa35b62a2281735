"""Published weights by name: tags, downloads through a mirror and the Hub, the cache and its checks, the CLI.

No test reaches the internet: a loopback HTTP server (tests/loopback.py) serves files the tests write in each source's
real format (official ``{"model": ...}`` .pth, HF safetensors, torchvision .pth named with its hash prefix, MindCV
.ckpt), and ``SWINKIT_GITHUB_MIRROR`` / ``HF_ENDPOINT`` / registered tags point there.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import ImageNetInfo

import swinkit
from swinkit import hub
from swinkit.checkpoints import save_checkpoint
from swinkit.checkpoints.mindspore import mindcv_numerics
from swinkit.cli import main
from swinkit.core.errors import CheckpointError, ConfigError, DownloadError, MissingExtraError
from swinkit.engine.config import load_config
from swinkit.engine.setup import load_pretrained
from swinkit.hub.download import cache_dir
from swinkit.tools.peers import perturb_parameters
from tests.loopback import LoopbackServer
from tests.test_config import SEED_DIR

V2 = "swinv2_tiny_window8_256"
V2_RELEASE = "/gh/SwinTransformer/storage/releases/download/v2.0.0/swinv2_tiny_patch4_window8_256.pth"
V1 = "swin_tiny_patch4_window7_224"
V1_22K_RELEASE = "/gh/SwinTransformer/storage/releases/download/v1.0.8/swin_tiny_patch4_window7_224_22k.pth"


def _file_bytes(model: torch.nn.Module, format: str, suffix: str, tmp: Path, **kw) -> bytes:
    path = tmp / f"weights{suffix}"
    save_checkpoint(model, path, format=format, **kw)
    return path.read_bytes()


@pytest.fixture(scope="module")
def v2_weights(tmp_path_factory):
    """A Swin V2-T with random non-trivial weights, its logits on a fixed input, and the official .pth of it."""
    model = perturb_parameters(swinkit.create_model(V2), seed=3).eval()
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    official = _file_bytes(model, "microsoft", ".pth", tmp_path_factory.mktemp("v2"))
    return model, x, logits, official


@pytest.fixture(autouse=True)
def _own_registered_tags(monkeypatch):
    """Tags a test registers stay in that test."""
    monkeypatch.setattr(hub.weights, "_USER", {})


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


@pytest.fixture
def mirror(server, monkeypatch):
    monkeypatch.setenv("SWINKIT_GITHUB_MIRROR", f"{server.url}/gh/")
    return server


def _cached_files() -> list[Path]:
    return [p for p in cache_dir().rglob("*") if p.is_file()] if cache_dir().exists() else []


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_the_registry_lists_every_source_with_its_preprocessing():
    tags = {w.tag: w for w in swinkit.list_weights(V2)}
    assert hub.default_tag(V2) == "in1k" and swinkit.list_weights(V2)[0].tag == "in1k"
    official = tags["in1k"]
    assert official.origin == "official" and official.top1 == 81.8 and official.format == "microsoft"
    assert official.url == "https://github.com/SwinTransformer/storage/releases/download/v2.0.0/" \
                           "swinv2_tiny_patch4_window8_256.pth"  # fmt: skip
    assert tags["timm_ms_in1k"].hub_id == "timm/swinv2_tiny_window8_256.ms_in1k"  # read from timm's own configs
    assert tags["timm_ms_in1k"].crop_pct == 0.9 and tags["timm_ms_in1k"].format == "timm"
    assert tags["hf_in1k"].hub_id == "microsoft/swinv2-tiny-patch4-window8-256"
    tv = tags["tv_in1k"]  # URL, hash prefix, preprocessing and accuracy as torchvision ships them
    assert tv.url.endswith("swin_v2_t-b137f0e2.pth") and tv.sha256 == "b137f0e2"
    assert tv.top1 == pytest.approx(82.072) and tv.crop_pct == pytest.approx(256 / 260)
    assert tags["mindcv_in1k"].format == "mindspore" and tags["mindcv_in1k"].top1 == 81.38
    # The default is the release the model table quotes: Swin-B's is the 22k fine-tune (85.2), CSWin-L's too.
    assert hub.default_tag("swin_base_patch4_window7_224") == "in22k_ft_in1k"
    assert swinkit.get_weights("swinv2_base_window12_192").label_set == "imagenet-22k"
    assert swinkit.get_weights("swin_tiny_patch4_window7_224.moby_300ep").num_classes == 0
    assert {w.model for w in swinkit.list_weights()} >= {"cswin_tiny_224", V1, V2}
    assert {w.tag for w in swinkit.model_info(V2).weights} == set(tags)
    with torch.device("meta"):  # timm's naming without weights: the tag's class count, nothing downloaded
        assert swinkit.create_model(f"{V1}.in22k").num_classes == 21841
        assert swinkit.create_model(f"{V1}.moby_300ep").num_classes == 1000  # a backbone tag keeps the registry's


def test_unknown_tags_and_models_without_weights_are_one_clear_error():
    with pytest.raises(ConfigError, match="no weights tagged 'in21k'; its tags: in1k"):
        swinkit.get_weights(V2, "in21k")
    with pytest.raises(ConfigError, match="no published weights"):
        swinkit.create_model("swinv2_huge_window12_192", pretrained=True)
    with pytest.raises(CheckpointError, match="neither a file nor a tag"):
        swinkit.create_model(V2, pretrained="nosuchmodel.in1k")
    with pytest.raises(CheckpointError, match="does not exist"):
        swinkit.create_model(V2, pretrained="./missing.pth")
    with pytest.raises(ConfigError, match="not the URL of a checkpoint file"):  # never a path outside the cache
        swinkit.create_model(V2, pretrained="http://127.0.0.1:9/../../etc/passwd")
    with pytest.raises(ConfigError, match="nosuch:// is no file system fsspec knows"):
        swinkit.create_model(V2, pretrained="nosuch://127.0.0.1/w.pth")


def test_pretrained_true_downloads_once_through_the_mirror(mirror, v2_weights):
    _, x, logits, official = v2_weights
    mirror.files[V2_RELEASE] = official
    model = swinkit.create_model(V2, pretrained=True)
    assert torch.allclose(_logits(model, x), logits, atol=1e-5, rtol=0)
    assert model.load_report.format == "microsoft" and model.pretrained_cfg["tag"] == "in1k"
    assert model.model_info.top1 == 81.8
    again = swinkit.create_model(f"{V2}.in1k", pretrained=True)  # timm's naming; served from the cache
    assert torch.equal(_logits(again, x), _logits(model, x))
    assert mirror.gets(V2_RELEASE) == 1
    cached = cache_dir() / "github.com" / V2_RELEASE.removeprefix("/gh/")  # keyed by the release URL, not the mirror
    assert cached.read_bytes() == official
    assert cached.with_name(f"{cached.name}.sha256").read_text().strip() == hashlib.sha256(official).hexdigest()


def test_a_cached_file_that_changed_is_refused(mirror, v2_weights):
    mirror.files[V2_RELEASE] = v2_weights[3]
    path = hub.fetch(swinkit.get_weights(V2))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="has changed since it was downloaded"):
        swinkit.create_model(V2, pretrained=True)


def test_truncated_and_wrong_hash_downloads_leave_nothing_and_the_next_try_succeeds(server, v2_weights):
    model, x, logits, _ = v2_weights
    data = _file_bytes(model, "torchvision", ".pth", cache_dir().parent)
    prefix = hashlib.sha256(data).hexdigest()[:8]  # torchvision names its files with it: swin_v2_t-b137f0e2.pth
    path = f"/models/swin_v2_t-{prefix}.pth"
    swinkit.register_weights(swinkit.Weights(
        V2, "test_tv", "torchvision", "torchvision", 1000, (256, 256), "bicubic", 256 / 260, (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225), url=server.url + path, sha256=prefix,
    ))  # fmt: skip
    server.files[path] = data
    server.truncate.add(path)  # the connection drops halfway
    with pytest.raises(DownloadError, match=r"stopped after \d+ of \d+ bytes"):
        swinkit.create_model(V2, pretrained="test_tv")
    assert _cached_files() == []
    server.truncate.clear()
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 3] ^= 0x01  # a single flipped bit on the way
    server.files[path] = bytes(corrupt)
    with pytest.raises(DownloadError, match=f"is not the published {prefix}"):
        swinkit.create_model(V2, pretrained="test_tv")
    assert _cached_files() == []
    server.files[path] = data
    loaded = swinkit.create_model(V2, pretrained="test_tv")
    assert loaded.load_report.format == "torchvision"
    assert torch.allclose(_logits(loaded, x), logits, atol=1e-5, rtol=0)
    assert loaded.model_info.crop_pct == pytest.approx(256 / 260)  # the tag's own preprocessing
    assert server.gets(path) == 3


@pytest.mark.parametrize("env", ["SWINKIT_OFFLINE", None])
def test_offline_or_unreachable_with_an_empty_cache_is_one_error(monkeypatch, env):
    monkeypatch.setenv("SWINKIT_GITHUB_MIRROR", "http://127.0.0.1:9/gh/")  # port 9 (discard): nothing listens
    if env:
        monkeypatch.setenv(env, "1")
    with pytest.raises(DownloadError) as caught:
        swinkit.create_model(V2, pretrained=True)
    message = str(caught.value)
    assert "http://127.0.0.1:9/gh/SwinTransformer/storage/releases/download/v2.0.0/" in message  # the URL
    assert str(cache_dir() / "github.com" / V2_RELEASE.removeprefix("/gh/")) in message  # where to place the file
    assert "--weights FILE" in message and "SWINKIT_GITHUB_MIRROR" in message
    assert ("offline" in message) == bool(env)


def test_a_hub_tag_goes_through_huggingface_hub(server, v2_weights, monkeypatch, tmp_path):
    import huggingface_hub.constants

    model, x, logits, _ = v2_weights
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    repo = "/microsoft/swinv2-tiny-patch4-window8-256/resolve/main"
    server.files[f"{repo}/model.safetensors"] = _file_bytes(model, "hf", ".safetensors", tmp_path)
    loaded = swinkit.create_model(V2, pretrained="hf_in1k")
    assert loaded.load_report.format == "hf"
    assert torch.allclose(_logits(loaded, x), logits, atol=1e-5, rtol=0)
    assert server.gets(f"{repo}/model.safetensors") == 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # huggingface_hub's own cache serves it offline
    assert torch.equal(_logits(swinkit.create_model(V2, pretrained="hf_in1k"), x), _logits(loaded, x))
    with pytest.raises(DownloadError, match="not in the Hugging Face cache"):
        swinkit.create_model("swinv2_tiny_window16_256", pretrained="hf_in1k")


def test_a_timm_hub_tag_falls_back_to_pytorch_model_bin(server, monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    model = perturb_parameters(swinkit.create_model(V1, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                                                    num_classes=1000), seed=1)  # fmt: skip
    repo = "/timm/swin_tiny_patch4_window7_224.ms_in1k/resolve/main"
    server.files[f"{repo}/pytorch_model.bin"] = _file_bytes(model, "timm", ".bin", tmp_path)
    loaded = swinkit.create_model(V1, pretrained="timm_ms_in1k", embed_dim=16, depths=(1, 1, 1, 1),
                                  num_heads=(1, 1, 2, 2))  # fmt: skip
    x = torch.randn(1, 3, 224, 224)
    assert torch.allclose(_logits(loaded, x), _logits(model, x), atol=1e-5, rtol=0)
    assert loaded.model_info.crop_pct == 0.9  # timm's preprocessing for timm's copy


def test_a_22k_release_loads_into_a_1k_model_through_the_label_map(mirror):
    model22k = perturb_parameters(swinkit.create_model(V1, num_classes=21841), seed=5).eval()
    buffer = io.BytesIO()
    torch.save({"model": swinkit.checkpoints.layouts.from_swinkit(model22k, "microsoft")}, buffer)
    mirror.files[V1_22K_RELEASE] = buffer.getvalue()
    into22k = swinkit.create_model(V1, pretrained="in22k")
    assert into22k.num_classes == 21841  # the tag's class count when none is asked for
    into1k = swinkit.create_model(V1, pretrained="in22k", num_classes=1000)
    assert into1k.load_report.adapted and "label map" in " ".join(into1k.load_report.adapted)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    mapping = swinkit.checkpoints.transfer.read_label_map("imagenet22k_to_1k")
    assert torch.allclose(_logits(into1k, x), _logits(model22k, x)[:, mapping], atol=1e-5, rtol=0)
    fresh = swinkit.create_model(V1, pretrained="in22k", num_classes=10)  # another class count: a fresh head
    assert fresh.num_classes == 10 and "head.fc.weight" not in fresh.load_report.loaded
    assert mirror.gets(V1_22K_RELEASE) == 1


def test_a_mindcv_ckpt_tag_loads_with_mindcv_numerics(server, tmp_path):
    model = perturb_parameters(swinkit.create_model(V2, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2)))
    data = _file_bytes(model, "mindspore", ".ckpt", tmp_path)
    server.files["/mindcv/swinv2_tiny_window8-test.ckpt"] = data
    weights = swinkit.register_weights(swinkit.Weights(
        V2, "test_mindcv", "mindcv", "mindspore", 1000, (256, 256), "bicubic", 0.875, (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225), url=f"{server.url}/mindcv/swinv2_tiny_window8-test.ckpt",
    ))  # fmt: skip
    assert weights.origin == "user" and weights in swinkit.list_weights(V2)
    loaded = swinkit.create_model(V2, pretrained="test_mindcv", embed_dim=16, depths=(1, 1, 1, 1),
                                  num_heads=(1, 1, 2, 2))  # fmt: skip
    assert loaded.load_report.format == "mindspore" and loaded.load_report.adapted
    x = torch.randn(1, 3, 256, 256)
    mindcv_numerics(model)  # the weights were trained with MindCV's LayerNorm eps and GELU: the loaded model has them
    assert torch.allclose(_logits(loaded, x), _logits(model, x), atol=1e-5, rtol=0)


def test_pretrained_also_takes_a_file_or_a_url(server, v2_weights, tmp_path):
    model, x, logits, official = v2_weights
    path = tmp_path / "mine.pth"
    path.write_bytes(official)
    from_file = swinkit.create_model(V2, pretrained=str(path))
    server.files["/any/mine.pth"] = official
    from_url = swinkit.create_model(V2, pretrained=f"{server.url}/any/mine.pth")
    for loaded in (from_file, from_url):
        assert torch.allclose(_logits(loaded, x), logits, atol=1e-5, rtol=0)
    assert from_file.pretrained_cfg["tag"] is None  # a file claims no tag: the registered preprocessing only


def test_files_on_other_file_systems_go_through_fsspec_into_the_cache(v2_weights, tmp_path, capsys):
    import fsspec

    _, x, logits, official = v2_weights
    memory = fsspec.filesystem("memory")
    memory.pipe("/bucket/runs/w.pth", official)
    loaded = swinkit.create_model(V2, pretrained="memory://bucket/runs/w.pth")
    assert torch.allclose(_logits(loaded, x), logits, atol=1e-5, rtol=0)
    cached = cache_dir() / "memory" / "bucket" / "runs" / "w.pth"
    assert cached.read_bytes() == official and cached.with_name("w.pth.sha256").is_file()
    out = tmp_path / "w.safetensors"
    assert main(["convert", "memory://bucket/runs/w.pth", str(out), "--model", V2]) == 0  # a remote source
    capsys.readouterr()
    with pytest.raises(DownloadError, match="memory://bucket/runs/missing.pth: no such file"):
        swinkit.create_model(V2, pretrained="memory://bucket/runs/missing.pth")
    memory.rm("/bucket", recursive=True)


@pytest.mark.skipif(not (SEED_DIR / "swinv2_base_patch4_window12to16_192to256_22kto1k_ft.yaml").is_file(),
                    reason="seed configs not found beside the repository")  # fmt: skip
def test_the_seed_configs_s3_path_reaches_the_s3_backend_intact(monkeypatch):
    import importlib.util

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata credentials either
    cfg = load_config(str(SEED_DIR / "swinv2_base_patch4_window12to16_192to256_22kto1k_ft.yaml"))
    assert cfg.model.pretrained.startswith("s3://open-data/")  # no double slash lost on the way in
    model = swinkit.create_model("swinv2_tiny_window8_256", embed_dim=16, depths=(1, 1), num_heads=(1, 2))
    if importlib.util.find_spec("s3fs") is None:
        with pytest.raises(MissingExtraError, match=re.escape(cfg.model.pretrained) + ".*pip install s3fs"):
            load_pretrained(model, cfg)
        return
    with pytest.raises(DownloadError) as caught:  # no credentials: the path and the variables to set
        load_pretrained(model, cfg)
    message = str(caught.value)
    assert cfg.model.pretrained in message and "NoCredentialsError" in message
    assert all(v in message for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"))


def test_predict_with_pretrained_prints_imagenet_class_names(mirror, v2_weights, tmp_path, capsys):
    _, _, _, official = v2_weights
    mirror.files[V2_RELEASE] = official
    image = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 280, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "--model", V2, "--pretrained", str(image), "--topk", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 4
    names = {ImageNetInfo().index_to_description(i) for i in range(1000)}
    for line in lines[1:]:
        index, label = line.split(maxsplit=2)[1:]
        assert label == ImageNetInfo().index_to_description(int(index)) and label in names
    assert main(["predict", "--model", V2, "--weights", "in1k", "--pretrained", str(image)]) == 2
    assert "not both" in capsys.readouterr().err


def test_convert_takes_a_tag(mirror, v2_weights, tmp_path, capsys):
    model, x, logits, official = v2_weights
    mirror.files[V2_RELEASE] = official
    out = tmp_path / "v2.safetensors"
    assert main(["convert", f"{V2}.in1k", str(out), "--to", "timm"]) == 0
    assert "microsoft layout" in capsys.readouterr().out
    fresh = swinkit.create_model(V2)
    assert swinkit.load_checkpoint(fresh, out).format == "timm"
    assert torch.allclose(_logits(fresh, x), logits, atol=1e-5, rtol=0)


def test_download_and_models_pretrained_commands(mirror, v2_weights, capsys):
    mirror.files[V2_RELEASE] = v2_weights[3]
    assert main(["download", V2]) == 0
    name, path = capsys.readouterr().out.strip().split("\t")
    assert name == f"{V2}.in1k" and Path(path) == cache_dir() / "github.com" / V2_RELEASE.removeprefix("/gh/")
    assert main(["models", "--pretrained", "--markdown", "swinv2_tiny_window8*"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| weights | default | origin |") and f"| `{V2}.in1k` | yes | official |" in table[2]
    assert any("hf-hub:timm/swinv2_tiny_window8_256.ms_in1k" in row for row in table)
    assert main(["download", f"{V2}.nosuchtag"]) == 2
    assert "no weights tagged 'nosuchtag'" in capsys.readouterr().err


def test_the_docs_tag_table_is_what_the_command_prints(capsys):
    readme = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    marker = "<!-- generated by `swinkit models --pretrained --markdown` -->\n"
    table = readme.split(marker, 1)[1].split("\n\n", 1)[0].strip()
    assert main(["models", "--pretrained", "--markdown"]) == 0
    printed = capsys.readouterr().out.strip()

    def own(rows: str) -> list[str]:  # timm's rows follow the installed timm, which CI may have newer
        return [row for row in rows.splitlines() if "| timm |" not in row]

    assert own(printed) == own(table)  # regenerate the docs' table after changing a tag
    assert any("| timm |" in row for row in table.splitlines())


def test_imagenet_22k_models_print_22k_class_names():
    from swinkit.deploy.predict import class_names

    names = class_names(21841, None)
    info = ImageNetInfo("imagenet-22k")
    assert len(names) == 21841 and names[12345] == info.index_to_description(12345)
    assert class_names(1000, None)[0] == "tench, Tinca tinca"


def test_segmentation_tags_load_a_whole_upernet_or_a_backbone(mirror, tmp_path):
    from tests.engine_utils import tiny_upernet

    small = dict(channels=16, auxiliary_channels=8, backbone_args=dict(embed_dim=16, window_size=4,
                 depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)))  # fmt: skip
    released = tiny_upernet(150)
    release = "/gh/SwinTransformer/storage/releases/download/v1.0.1/upernet_swin_tiny_patch4_window7_512x512.pth"
    mirror.files[release] = _file_bytes(released, "mmseg", ".pth", tmp_path)
    name = "upernet_swin_tiny_patch4_window7_512"
    assert swinkit.get_weights(name).miou == 44.51  # the default tag: the official release the model table quotes
    loaded = swinkit.create_model(name, pretrained=True, **small)
    assert loaded.num_classes == 150 and loaded.load_report.format == "mmseg" and not loaded.load_report.missing
    assert loaded.model_info.miou == 44.51 and loaded.pretrained_cfg["tag"] == "ade20k"
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    assert torch.equal(_logits(loaded, x), _logits(released, x))
    other = swinkit.create_model(name, pretrained=True, num_classes=11, **small)  # new classes: classifiers afresh
    assert other.num_classes == 11 and "decode_head.conv_seg.weight" not in other.load_report.loaded
    assert torch.equal(other.decode_head.bottleneck.conv.weight, released.decode_head.bottleneck.conv.weight)
    classifier = perturb_parameters(swinkit.create_model(V1, embed_dim=16, window_size=4, depths=(2, 2, 2, 2),
                                                         num_heads=(1, 2, 4, 8)))  # fmt: skip
    mirror.files["/gh/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth"] = \
        _file_bytes(classifier, "microsoft", ".pth", tmp_path)  # fmt: skip
    started = swinkit.create_model(name, pretrained=f"{V1}.in1k", num_classes=11, **small)
    assert torch.equal(started.backbone.layers[0].blocks[0].attn.qkv.weight,
                       classifier.layers[0].blocks[0].attn.qkv.weight)  # fmt: skip

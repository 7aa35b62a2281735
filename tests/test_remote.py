"""Object storage through a local S3 service (moto's server mode on the loopback address): pretrained weights,
shards, checkpoint directories and runs on ``s3://``, and the errors for a missing key or an unreachable endpoint."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from swinkit.cli import main
from swinkit.hub import cache_dir
from tests.engine_utils import TINY, state_dicts_equal
from tests.loopback import LoopbackS3
from tests.test_shards import write_digit_folder

BUCKET = "swinkit-test"
COMMON = [*TINY, "data.max_train_samples=null", "data.max_val_samples=null", "sched.epochs=1"]


@pytest.fixture(scope="module")
def s3_service():
    with LoopbackS3() as service:
        yield service


@pytest.fixture
def s3(s3_service, monkeypatch):
    """The bucket, empty, with the environment a user sets for an S3-compatible service."""
    import s3fs

    for name, value in {"AWS_ENDPOINT_URL": s3_service.url, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}.items():
        monkeypatch.setenv(name, value)  # fmt: skip
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(BUCKET)
    yield fs
    fs.rm(BUCKET, recursive=True)


def _train(out: Path, data: str, weights: str, *extra: str) -> dict:
    assert main(["train", "--data", data, "--output", str(out), *COMMON, f"model.pretrained={weights}", *extra]) == 0
    return load_file(out / "checkpoints" / "last" / "model.safetensors")


def test_pretrained_shards_and_checkpoints_on_s3(s3, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    folder = write_digit_folder(tmp_path / "digits")
    assert main(["shard", "--data", str(folder), "--output", f"s3://{BUCKET}/shards", "--shard-samples", "24"]) == 0
    assert main(["shard", "--data", str(folder), "--output", str(tmp_path / "shards"), "--shard-samples", "24"]) == 0
    for local in (tmp_path / "shards").iterdir():  # the same files, uploaded whole
        assert s3.cat_file(f"{BUCKET}/shards/{local.name}") == local.read_bytes()
    assert len(s3.ls(f"{BUCKET}/shards")) == len(list((tmp_path / "shards").iterdir())) == 7
    # Weights to start from: a run's own, in the official layout the ModelZoo config names on OBS.
    assert main(["train", "--output", str(tmp_path / "seed"), *COMMON, "train.stop_after_steps=2"]) == 0
    state = load_file(tmp_path / "seed" / "checkpoints" / "last" / "model.safetensors")
    torch.save({"model": state}, tmp_path / "w.pth")
    s3.put_file(str(tmp_path / "w.pth"), f"{BUCKET}/weights/w.pth")

    from_s3 = _train(tmp_path / "remote", f"s3://{BUCKET}/shards", f"s3://{BUCKET}/weights/w.pth")
    local = _train(tmp_path / "local", str(tmp_path / "shards"), str(tmp_path / "w.pth"))
    assert state_dicts_equal(from_s3, local)

    # eval --checkpoint s3://... of a checkpoint directory, against the same directory on disk
    last = tmp_path / "remote" / "checkpoints" / "last"
    s3.put(str(last), f"{BUCKET}/runs/a/last", recursive=True)
    assert main(["eval", "--checkpoint", f"s3://{BUCKET}/runs/a/last", "--data", f"s3://{BUCKET}/shards"]) == 0
    copied = cache_dir() / "s3" / BUCKET / "runs" / "a" / "last"
    assert str(copied / "eval.json") in caplog.text and not (copied / "trainer_state.pt").exists()
    assert main(["eval", "--checkpoint", str(last), "--data", str(tmp_path / "shards")]) == 0
    assert json.loads((copied / "eval.json").read_text()) == json.loads((last / "eval.json").read_text())

    # The directory rewritten on S3 (another run's weights): fetched again, not served stale from the cache.
    s3.put_file(str(tmp_path / "local" / "checkpoints" / "best" / "model.safetensors"),
                f"{BUCKET}/runs/a/last/model.safetensors")  # fmt: skip
    s3.put_file(str(tmp_path / "w.pth"), f"{BUCKET}/runs/a/last/extra.pth")
    assert main(["eval", "--checkpoint", f"s3://{BUCKET}/runs/a/last", "--data", f"s3://{BUCKET}/shards"]) == 0
    assert (copied / "model.safetensors").read_bytes() == (
        tmp_path / "local" / "checkpoints" / "best" / "model.safetensors").read_bytes()  # fmt: skip

    # --resume s3://... copies the run into a new local --output and continues there
    s3.put(str(tmp_path / "seed"), f"{BUCKET}/runs/seed", recursive=True)
    assert main(["train", "--resume", f"s3://{BUCKET}/runs/seed", "--output", str(tmp_path / "resumed")]) == 0
    assert (tmp_path / "resumed" / "checkpoints" / "last" / "model.safetensors").is_file()
    assert not list((tmp_path / "resumed").rglob("*.source"))


def test_missing_keys_and_remote_outputs_give_one_clear_error(s3, tmp_path, capsys):
    assert main(["train", "--data", f"s3://{BUCKET}/nothing", *COMMON]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"s3://{BUCKET}/nothing: no shard index" in err
    assert main(["train", *COMMON, f"model.pretrained=s3://{BUCKET}/missing.pth", "--output", str(tmp_path / "r")]) == 2
    assert f"s3://{BUCKET}/missing.pth: no such file" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", f"s3://{BUCKET}/runs/none"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["train", *COMMON, "--output", f"s3://{BUCKET}/runs/x"]) == 2
    assert "object storage does not offer" in capsys.readouterr().err
    assert main(["train", "--resume", f"s3://{BUCKET}/runs/x"]) == 2
    assert "add --output DIR" in capsys.readouterr().err
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)  # a weight file, not a run directory
    s3.pipe_file(f"{BUCKET}/runs/file.pth", buffer.getvalue())
    assert main(["train", "--resume", f"s3://{BUCKET}/runs/file.pth", "--output", str(tmp_path / "r2")]) == 2
    assert "not a swinkit run directory" in capsys.readouterr().err and not (tmp_path / "r2").exists()


def test_an_unreachable_endpoint_gives_one_clear_error(monkeypatch, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed}", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)  # fmt: skip
    assert main(["train", "--data", f"s3://{BUCKET}/shards", *COMMON]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"s3://{BUCKET}/shards/_info.json" in err
    assert re.search("EndpointConnectionError.*AWS_ENDPOINT_URL", err)
    assert main(["eval", "--checkpoint", f"s3://{BUCKET}/runs/a/last"]) == 2
    assert "could not read" in capsys.readouterr().err


def test_a_listed_key_that_leads_outside_the_cache_is_refused(s3, tmp_path, capsys, monkeypatch):
    """A checkpoint directory on S3 whose listing holds ``../`` keys: nothing is written outside the cache (today
    the key's relative part was joined onto the cache path and overwrote ``target``)."""
    monkeypatch.setenv("SWINKIT_HOME", str(tmp_path / "home"))
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    s3.pipe_file(f"{BUCKET}/runs/a/last/model.safetensors", b"{}")
    s3.pipe_file(f"{BUCKET}/runs/a/last/{'../' * 24}{str(target).lstrip('/')}", b"overwritten")
    assert main(["eval", "--checkpoint", f"s3://{BUCKET}/runs/a/last"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "leads outside swinkit's cache" in err
    assert target.read_text() == "keep me" and not (tmp_path / "victim.txt.sha256").exists()

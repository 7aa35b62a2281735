"""Downloads against hostile or broken servers on the loopback address: bounded in bytes and time, nothing but a
verified weight file of the right format enters the cache, no path leads outside it, and each failure is one
``DownloadError`` (``swinkit.hub.download``)."""

from __future__ import annotations

import gzip
import io
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from swinkit.cli import main
from swinkit.core.errors import ConfigError, DownloadError
from swinkit.hub import download
from swinkit.hub.download import cached_path, fetch_hub, fetch_url
from tests.engine_utils import REPO
from tests.loopback import LoopbackServer

NAME = "/releases/w.pth"


@pytest.fixture
def weights() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(1000, dtype=torch.float32)}, buffer)
    return buffer.getvalue()


@pytest.fixture
def server(monkeypatch, tmp_path):
    monkeypatch.setenv("SWINKIT_HOME", str(tmp_path / "home"))
    for name in ("SWINKIT_OFFLINE", "HF_HUB_OFFLINE", "SWINKIT_GITHUB_MIRROR"):
        monkeypatch.delenv(name, raising=False)
    with LoopbackServer() as s:
        yield s


def _answer(status: int, headers: dict[str, str], body: bytes = b"", *, drip: float = 0.0, repeat: int = 1):
    """A handler that sends ``headers`` (repeated keys as a list) and ``body`` ``repeat`` times, ``drip`` seconds
    between writes."""

    def answer(handler) -> None:
        handler.send_response(status)
        for key, values in headers.items():
            for value in values if isinstance(values, list) else [values]:
                handler.send_header(key, value)
        handler.end_headers()
        try:
            for _ in range(repeat):
                handler.wfile.write(body)
                handler.wfile.flush()
                time.sleep(drip)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    return answer


def _nothing_cached() -> bool:
    root = download.cache_dir()
    return not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


def test_a_dripping_body_is_given_up_within_the_stall_window(server, monkeypatch, weights):
    """One byte every 0.2 s: each read returns in time, so only a throughput window ends it (today's per-read
    timeout never does)."""
    monkeypatch.setenv("SWINKIT_DOWNLOAD_TIMEOUT", "1")
    server.answers[NAME] = _answer(200, {}, b"x", drip=0.2, repeat=25)
    with pytest.raises(DownloadError, match="the transfer stalled"):
        fetch_url(server.url + NAME, progress=False)
    assert _nothing_cached()


def test_a_download_past_its_deadline_is_given_up(server, monkeypatch):
    monkeypatch.setenv("SWINKIT_DOWNLOAD_DEADLINE", "1")
    server.answers[NAME] = _answer(200, {}, bytes(1 << 20), drip=0.3, repeat=10)
    with pytest.raises(DownloadError, match="not complete after SWINKIT_DOWNLOAD_DEADLINE=1 s"):
        fetch_url(server.url + NAME, progress=False)
    assert _nothing_cached()


def test_an_endless_body_without_a_size_stops_at_the_cap(server, monkeypatch):
    monkeypatch.setenv("SWINKIT_DOWNLOAD_MAX_BYTES", str(4 << 20))
    server.answers[NAME] = _answer(200, {}, bytes(1 << 20), repeat=64)
    with pytest.raises(DownloadError, match=f"more than SWINKIT_DOWNLOAD_MAX_BYTES={4 << 20} bytes"):
        fetch_url(server.url + NAME, progress=False)
    assert _nothing_cached()


@pytest.mark.parametrize("case", ["cut_short", "html", "empty", "gzip", "bad_length", "two_lengths"])
def test_what_is_not_a_weight_file_never_enters_the_cache_and_is_fetched_again(server, weights, case):
    answers = {
        "cut_short": _answer(200, {}, weights[: len(weights) // 2]),  # no Content-Length: only the format tells
        "html": _answer(200, {"Content-Type": "text/html"}, b"<!DOCTYPE html><html>Sign in to continue</html>"),
        "empty": _answer(200, {"Content-Length": "0"}),
        "gzip": _answer(200, {"Content-Encoding": "gzip"}, gzip.compress(weights)),
        "bad_length": _answer(200, {"Content-Length": "abc"}, weights),
        "two_lengths": _answer(200, {"Content-Length": [str(len(weights)), "7"]}, weights),
    }
    server.answers[NAME] = answers[case]
    with pytest.raises(DownloadError) as caught:
        fetch_url(server.url + NAME, progress=False)
    assert "nothing was kept" in str(caught.value)
    assert _nothing_cached()
    del server.answers[NAME]
    server.files[NAME] = weights  # the server is fixed: the next try downloads and verifies the real file
    assert fetch_url(server.url + NAME, progress=False).read_bytes() == weights


def test_an_html_page_cached_by_an_older_version_is_fetched_again(server, weights):
    path = cached_path(server.url + NAME)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>login</html>")  # with its SHA-256 recorded, as an older swinkit cached it
    download._verify_cached(path, "", server.url + NAME)
    server.files[NAME] = weights
    assert fetch_url(server.url + NAME, progress=False).read_bytes() == weights
    assert server.gets(NAME) == 1


def test_a_temporary_file_left_by_a_killed_download_is_swept(server, weights):
    path = cached_path(server.url + NAME)
    path.parent.mkdir(parents=True)
    left = path.parent / f".{path.name}.k1ll3d.tmp"
    left.write_bytes(b"partial")
    server.files[NAME] = weights
    fetch_url(server.url + NAME, progress=False)
    assert not left.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + download.HASH_SUFFIX]


def test_concurrent_downloads_of_one_file_fetch_it_once(server, weights):
    def slowly(handler) -> None:  # long enough that all four overlap
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(weights)))
        handler.end_headers()
        for start in range(0, len(weights), len(weights) // 4 + 1):
            handler.wfile.write(weights[start : start + len(weights) // 4 + 1])
            time.sleep(0.1)

    server.answers[NAME] = slowly
    results, errors = [], []

    def fetch():
        try:
            results.append(fetch_url(server.url + NAME, progress=False))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1 and server.gets(NAME) == 1


def test_url_paths_never_lead_outside_the_cache(server):
    for url in ("http://../escaped.safetensors", "http://host/a/../../../../escaped.pth", "http:///x.pth",
                "s3://bucket/../x.pth", "http://./x.pth"):  # fmt: skip
        with pytest.raises(ConfigError, match="not the URL of a checkpoint file"):
            cached_path(url)
    assert cached_path("http://host/a/b.pth").is_relative_to(download.cache_dir())


def test_predict_names_the_download_not_the_architecture(server, capsys):
    server.answers["/w.safetensors"] = _answer(200, {"Content-Type": "text/html"}, b"<html>proxy error</html>")
    assert main(["predict", "--checkpoint", server.url + "/w.safetensors", str(REPO / "examples" / "digit-7.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a .safetensors file" in err and "HTML" in err and "--model" not in err


@pytest.fixture
def silent_endpoint():
    """A TCP endpoint that accepts connections and never answers; yields its URL and the connection count."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    listener.close()
    for conn in accepted:
        conn.close()


def test_an_unresponsive_hf_endpoint_is_given_up_after_one_request(silent_endpoint, monkeypatch, tmp_path):
    url, accepted = silent_endpoint
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("SWINKIT_REMOTE_TIMEOUT", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DownloadError, match="did not answer within SWINKIT_REMOTE_TIMEOUT=1 s") as caught:
        fetch_hub("someone/weights")
    assert "HF_ENDPOINT" in str(caught.value)
    assert len(accepted) == 1  # huggingface_hub's own retries (minutes against this endpoint) never started


def test_an_unresponsive_s3_endpoint_is_given_up_in_bounded_attempts(silent_endpoint, tmp_path):
    """A subprocess, so that today's unbounded retries (seven minutes) fail the test by its timeout."""
    url, accepted = silent_endpoint
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "PYTHONPATH": str(REPO),
           "SWINKIT_REMOTE_TIMEOUT": "1", "AWS_CONFIG_FILE": "/nonexistent", "SWINKIT_HOME": str(tmp_path)}  # fmt: skip
    command = [sys.executable, "-m", "swinkit", "eval", "--checkpoint", "s3://bucket/run/last"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert "SWINKIT_REMOTE_TIMEOUT" in proc.stderr and "AWS_ENDPOINT_URL" in proc.stderr
    assert len(accepted) <= 4  # two requests (HEAD, then list), two attempts each


def test_a_cache_that_cannot_be_written_is_still_read(server, weights, monkeypatch):
    """An air-gapped cluster's read-only copy of the cache: no lock can be taken there, and none is needed."""
    server.files[NAME] = weights
    path = fetch_url(server.url + NAME, progress=False)
    locks = download.cache_dir().parent / download.LOCKS_DIR
    for lock in locks.iterdir():
        lock.unlink()
    locks.rmdir()
    locks.write_text("")  # mkdir of it fails, as it does on a read-only file system
    monkeypatch.setenv("SWINKIT_OFFLINE", "1")
    assert fetch_url(server.url + NAME, progress=False) == path and server.gets(NAME) == 1

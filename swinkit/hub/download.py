"""Fetching weights: release files by URL into swinkit's cache, Hugging Face Hub repositories through huggingface_hub.

A URL download streams into a temporary file beside its cache entry with a progress bar, and is renamed to its final
name only when it is complete (as many bytes as the server announced) and its SHA-256 agrees with the published one
(torchvision's file names carry its first 8 hex digits). Without a published hash, the SHA-256 is recorded at the
first download (``<file>.sha256``) and checked each time the cached file is used, so a cached file that changed later
is refused instead of loaded. A failed download leaves nothing under the final name; the next try starts afresh.

What the server sends must also be a weight file of the format the name says (``check_weight_file``: not empty, not
an HTML page, not gzip-encoded, a complete safetensors header or ``torch.save`` zip); otherwise nothing is cached.
A download is bounded: ``SWINKIT_DOWNLOAD_MAX_BYTES`` (default 32 GiB) and the announced size cap the bytes, a
transfer that moves less than 64 KiB in ``SWINKIT_DOWNLOAD_TIMEOUT`` seconds (default 60, also the connect and read
timeout) is a stall, and ``SWINKIT_DOWNLOAD_DEADLINE`` (default 6 h) ends any download. One process fetches a cache
entry at a time (a lock under ``$SWINKIT_HOME/locks``; the others then find it cached), and it first removes the
temporary files a killed download left. Every cache path stays inside the cache: a URL or a listed key with ``..``
is refused.

Environment:
    SWINKIT_HOME: the cache root (default ``~/.cache/swinkit``); a URL's file goes to
        ``$SWINKIT_HOME/weights/<host>/<path>``.
    SWINKIT_GITHUB_MIRROR: a URL prefix that replaces ``https://github.com/`` in release URLs (as ``HF_ENDPOINT``
        does for the Hub), e.g. ``https://ghproxy.example.org/https://github.com/`` or an internal mirror.
    SWINKIT_OFFLINE (or HF_HUB_OFFLINE): never touch the network; use what is cached.
    HF_ENDPOINT, HF_HOME, HF_TOKEN, HF_HUB_OFFLINE: huggingface_hub's own, for Hub repositories (its cache).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from ..checkpoints.io import check_weight_file
from ..core import remote
from ..core.atomic import TMP_SUFFIX, write_atomic
from ..core.digest import sha256_file
from ..core.errors import CheckpointError, ConfigError, DownloadError

log = logging.getLogger(__name__)

GITHUB = "https://github.com/"
HASH_SUFFIX = ".sha256"
VERSION_SUFFIX = ".source"  # which remote object a cached copy was made from
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what a Hub repository holds its weights in, in order
HUB_ENDPOINT = "https://huggingface.co"
TIMEOUT_S = 60  # connect and per-read timeout; also the window a transfer must move MIN_WINDOW_BYTES in
MIN_WINDOW_BYTES = 64 << 10
DEADLINE_S = 6 * 3600  # a whole download
MAX_BYTES = 32 << 30  # more than any published Swin checkpoint (SwinV2-G's fp32 weights are 12 GB)
LOCKS_DIR = "locks"
_CHUNK = 1 << 20
_TRUE = ("1", "true", "yes", "on")
_HOST = re.compile(r"^[A-Za-z0-9_:]([A-Za-z0-9_.:-]*[A-Za-z0-9_])?$")  # a host name, IPv4 or IPv6 address, or bucket


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$SWINKIT_HOME/weights`` (default ``~/.cache/swinkit/weights``)."""
    home = os.environ.get("SWINKIT_HOME") or Path("~/.cache/swinkit").expanduser()
    return Path(home) / "weights"


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in _TRUE for v in ("SWINKIT_OFFLINE", "HF_HUB_OFFLINE"))


def mirrored(url: str) -> str:
    """``url`` with ``https://github.com/`` replaced by ``$SWINKIT_GITHUB_MIRROR`` when that is set."""
    mirror = os.environ.get("SWINKIT_GITHUB_MIRROR")
    if mirror and url.startswith(GITHUB):
        return mirror.rstrip("/") + "/" + url.removeprefix(GITHUB)
    return url


def cached_path(url: str) -> Path:
    """The cache entry of ``url``: ``cache_dir()/<host>/<path>`` for http(s), ``cache_dir()/<scheme>/<bucket>/<key>``
    otherwise, so that two files of one name from different places never stand for each other (the original URL is
    the key, whichever mirror served it).

    Raises:
        ConfigError: a URL with no file path, or whose host or path would lead outside the cache (``..``).
    """
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    root = cache_dir() if parts.scheme in ("http", "https") else cache_dir() / parts.scheme
    path = _within(root, [parts.hostname or "", *segments])
    if not segments or not parts.hostname or not _HOST.match(parts.hostname) or path is None:
        raise ConfigError(f"{url}: not the URL of a checkpoint file (its host and path must name one file, without "
                          "'..' segments); give the URL of the file itself")  # fmt: skip
    return path


def _within(root: Path, segments: list[str]) -> Path | None:
    """``root/segment/...``, or None unless every segment is a plain name and the result stays inside ``root``."""
    path = root.joinpath(*segments)
    plain = all(s not in ("", ".", "..") and "\\" not in s and "\0" not in s for s in segments)
    return path if plain and path.resolve().is_relative_to(root.resolve()) else None


def _record(path: Path) -> Path:
    return path.with_name(path.name + HASH_SUFFIX)


def _verify_cached(path: Path, sha256: str, url: str) -> None:
    """Refuse a cached file whose SHA-256 is not the published one or the one recorded when it was downloaded."""
    actual = sha256_file(path)
    record = _record(path)
    expected = sha256.lower() or (record.read_text().strip() if record.is_file() else "")
    if not expected:  # placed by hand (an air-gapped cluster): trusted on first use, checked from now on
        write_atomic(record, lambda tmp: Path(tmp).write_text(actual + "\n"))
        log.info("recorded SHA-256 %s of %s (placed in the cache by hand)", actual, path)
        return
    if not actual.startswith(expected):
        raise DownloadError(
            f"{path} has changed since it was downloaded from {url} (SHA-256 {actual[:16]}..., expected "
            f"{expected[:16]}...): it is corrupt or was replaced. Delete it (and {record.name}) and fetch it again"
        )


def unreachable(url: str, path: Path, reason: str) -> DownloadError:
    """The one error for weights that cannot be fetched: the URL, where to place the file, how to pass a file."""
    return DownloadError(
        f"could not download {url} ({reason}). Fetch it where the network allows (`swinkit download NAME.TAG`, or "
        f"any download tool) and place it at {path}, or pass a local file instead (pretrained='/path/to/file'; "
        "CLI: --weights FILE). Behind a firewall, SWINKIT_GITHUB_MIRROR=<url prefix> replaces https://github.com/"
    )


def limits() -> tuple[float, float, int]:
    """``(timeout, deadline, max_bytes)`` of a download, from the environment (see the module docstring)."""
    return (remote.env_number("SWINKIT_DOWNLOAD_TIMEOUT", TIMEOUT_S),
            remote.env_number("SWINKIT_DOWNLOAD_DEADLINE", DEADLINE_S),
            int(remote.env_number("SWINKIT_DOWNLOAD_MAX_BYTES", MAX_BYTES)))  # fmt: skip


@contextlib.contextmanager
def _entry_lock(path: Path):
    """Hold the lock of cache entry ``path`` (one process fetches it at a time; the others then find it cached),
    and sweep the temporary files an earlier process killed mid-download left beside it. A cache that cannot be
    written (a read-only copy on an air-gapped cluster) is read without the lock: nothing will be written there."""
    locks = cache_dir().parent / LOCKS_DIR  # beside the cache, not in it: a listing of the cache is only weights
    with contextlib.ExitStack() as stack:
        try:
            locks.mkdir(parents=True, exist_ok=True)
            held = stack.enter_context(open(locks / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".lock"),
                                            "a"))  # fmt: skip
        except OSError:
            held = None
        if held is not None:
            fcntl.flock(held, fcntl.LOCK_EX)
            if path.parent.is_dir():
                for name in (path.name, _record(path).name, path.name + VERSION_SUFFIX):
                    for stale in path.parent.glob(f".{glob.escape(name)}.*{TMP_SUFFIX}"):
                        stale.unlink(missing_ok=True)
        yield


def _chunks(stream, total: int | None, source: str):
    """What arrives on ``stream`` (announcing ``total`` bytes, or None), refused past ``limits()``: more bytes than
    announced or than the cap, a transfer past the deadline, or one that moves less than ``MIN_WINDOW_BYTES`` in a
    window of the timeout (a slow drip that per-read timeouts never end)."""
    timeout, deadline, max_bytes = limits()
    cap, what = (max_bytes, f"SWINKIT_DOWNLOAD_MAX_BYTES={max_bytes}") if total is None else (total, f"{total}")
    if total is not None and total > max_bytes:
        raise DownloadError(f"{source}: the server announces {total} bytes, more than SWINKIT_DOWNLOAD_MAX_BYTES="
                            f"{max_bytes}; raise it if the file is really that large")  # fmt: skip
    received = window = 0
    start = window_start = time.monotonic()
    read = getattr(stream, "read1", stream.read)  # what has arrived, not a full chunk: a slow drip is seen
    while chunk := read(_CHUNK):
        received, window = received + len(chunk), window + len(chunk)
        if received > cap:
            raise DownloadError(f"{source}: the server sent more than {what} bytes; nothing was kept")
        now = time.monotonic()
        if now - start > deadline:
            raise DownloadError(f"{source}: not complete after SWINKIT_DOWNLOAD_DEADLINE={deadline:g} s ({received} "
                                "bytes); nothing was kept. Raise it for a slow link")  # fmt: skip
        if now - window_start > timeout:
            if window < MIN_WINDOW_BYTES:
                raise DownloadError(f"{source}: {window} bytes arrived in {now - window_start:.0f} s (SWINKIT_"
                                    f"DOWNLOAD_TIMEOUT={timeout:g}): the transfer stalled; nothing was "
                                    "kept")  # fmt: skip
            window_start, window = now, 0
        yield chunk


def _copy_into_cache(path: Path, source: str, opened, sha256: str, progress: bool) -> Path:
    """Stream ``opened()`` (a context manager yielding a readable binary stream and its announced size or None) into
    ``path`` atomically, within ``limits()``, checking the size, the published hash and that it is a weight file of
    the format its name says; then record the SHA-256 beside it."""
    digest = hashlib.sha256()

    def write(tmp: str) -> None:
        received = 0
        with (
            opened() as (stream, total),
            open(tmp, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name, disable=not progress,
                 leave=False) as bar,
        ):  # fmt: skip
            for chunk in _chunks(stream, total, source):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"{source}: the download stopped after {received} of {total} bytes; nothing was "
                                "kept, run the command again")  # fmt: skip
        if sha256 and not digest.hexdigest().startswith(sha256.lower()):
            raise DownloadError(
                f"{source}: the downloaded file's SHA-256 {digest.hexdigest()[:16]}... is not the published "
                f"{sha256[:16]}...; it was not kept. Try again, or check the mirror (SWINKIT_GITHUB_MIRROR)"
            )
        try:
            check_weight_file(tmp, path.suffix)
        except CheckpointError as err:
            raise DownloadError(f"{source}: what the server sent is not a {path.suffix or 'weight'} file ({err}); "
                                "nothing was kept. Check the URL (and SWINKIT_GITHUB_MIRROR or the proxy), then run "
                                "the command again") from err  # fmt: skip

    write_atomic(path, write)
    write_atomic(_record(path), lambda tmp: Path(tmp).write_text(digest.hexdigest() + "\n"))
    log.info("downloaded %s to %s (SHA-256 %s)", source, path, digest.hexdigest())
    return path


def _usable_cached(path: Path, sha256: str, source: str) -> bool:
    """True when ``path`` holds the verified file; a cached file that is no weight file of its format (cached by an
    older swinkit: an HTML page, a cut-short body) is removed, to be fetched again. Raises when offline and the file
    is not cached."""
    if path.is_file():
        _verify_cached(path, sha256, source)
        try:
            check_weight_file(path, path.suffix)
            return True
        except CheckpointError as err:
            log.warning("%s: the cached copy of %s is no %s file (%s); removed, fetching it again", path, source,
                        path.suffix, err)  # fmt: skip
            path.unlink()
            _record(path).unlink(missing_ok=True)
    if offline():
        raise unreachable(source, path, "offline: SWINKIT_OFFLINE or HF_HUB_OFFLINE is set and the file is not cached")
    return False


def _content_length(headers, source: str) -> int | None:
    values = set(headers.get_all("Content-Length") or [])
    if not values:
        return None
    if len(values) > 1 or not next(iter(values)).strip().isdigit():
        announced = ", ".join(sorted(values))[:80]
        raise DownloadError(f"{source}: the server announced an invalid size (Content-Length: {announced}); nothing "
                            "was kept. Check the URL or the proxy")  # fmt: skip
    return int(next(iter(values)))


def fetch_url(url: str, *, sha256: str = "", progress: bool = True) -> Path:
    """The cached file of an http(s) ``url``, downloaded first if it is not cached (see the module docstring)."""
    path, source = cached_path(url), mirrored(url)
    timeout = limits()[0]

    @contextlib.contextmanager
    def opened():
        request = urllib.request.Request(source, headers={"Accept-Encoding": "identity"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
                if encoding != "identity":
                    raise DownloadError(f"{source}: the server sent the file {encoding}-encoded, though asked not to; "
                                        "nothing was kept. Check the mirror or the proxy")  # fmt: skip
                yield response, _content_length(response.headers, source)
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", None) or err
            raise unreachable(source, path, f"{type(err).__name__}: {reason}") from err

    with _entry_lock(path):
        if _usable_cached(path, sha256, source):
            return path
        return _copy_into_cache(path, source, opened, sha256, progress)


def fetch_remote(url: str, *, progress: bool = True, exclude: tuple[str, ...] = ()) -> Path:
    """The cached copy of a file, or of a directory (a training checkpoint: every file under it), on an fsspec file
    system (``s3://``, ``gs://``, ``hf://``, ``memory://``, ...); credentials and endpoints as
    ``swinkit.core.remote`` says. A cached file is used again only while the remote object is the one it was copied
    from (same size and ETag or modification time), so a checkpoint that a run has since rewritten is fetched anew;
    offline, the cached copy is used as it is. Files of a directory named in ``exclude`` are left out (a trainer
    state where only the weights are needed). A listed key that would lead outside the cache is refused."""
    path = cached_path(url)
    if offline():
        if path.is_dir():
            return path
        with _entry_lock(path):
            _usable_cached(path, "", url)
        return path
    fs, key = remote.filesystem(url)
    try:
        info = fs.info(key)
        listing = fs.find(key, detail=True) if info.get("type") == "directory" else {key: info}
    except FileNotFoundError as err:
        raise DownloadError(f"{url}: no such file on {type(fs).__name__}; check the bucket and the key") from err
    except Exception as err:  # each backend has its own errors: no credentials, access denied, no endpoint
        raise DownloadError(f"{remote.cannot_read(url, err)}. Or copy it to {path}, or pass a local path") from err
    if info.get("type") != "directory":
        return _fetch_remote_file(fs, key, url, path, info, progress)
    if not listing:
        raise DownloadError(f"{url}: an empty directory on {type(fs).__name__}; check the key")
    files = {}
    for name, entry in sorted(listing.items()):
        relative = name[len(key.rstrip("/")) :].lstrip("/")
        target = _within(path, relative.split("/"))
        if target is None:
            raise DownloadError(f"{url}: the listed key {name[:200]!r} leads outside swinkit's cache ({path}); "
                                "nothing was copied. The bucket holds a hostile key: check who can write there")
        if relative not in exclude:
            files[name] = (relative, target, entry)
    for name, (relative, target, entry) in files.items():
        _fetch_remote_file(fs, name, f"{url.rstrip('/')}/{relative}", target, entry, progress)
    wanted = {target for _, target, _ in files.values()}
    for stale in [p for p in path.rglob("*") if p.is_file() and not p.name.endswith((HASH_SUFFIX, VERSION_SUFFIX))]:
        if stale not in wanted:  # removed from the remote directory since the last copy
            stale.unlink()
    return path


def _fetch_remote_file(fs, key: str, url: str, path: Path, info: dict, progress: bool) -> Path:
    stamp = next((info[k] for k in ("ETag", "etag", "md5", "mtime", "LastModified") if info.get(k)), "")
    version = json.dumps({"size": info.get("size"), "stamp": str(stamp)})
    record = path.with_name(path.name + VERSION_SUFFIX)

    @contextlib.contextmanager
    def opened():
        try:
            with fs.open(key, "rb") as stream:
                yield stream, info.get("size")
        except DownloadError:
            raise
        except Exception as err:
            raise DownloadError(remote.cannot_read(url, err)) from err

    with _entry_lock(path):
        if record.is_file() and record.read_text() == version and _usable_cached(path, "", url):
            return path
        _copy_into_cache(path, url, opened, "", progress)
        write_atomic(record, lambda tmp: Path(tmp).write_text(version))
    return path


def fetch_hub(repo_id: str, *, filenames: tuple[str, ...] = HUB_FILES) -> Path:
    """A Hub repository's weight file (the first of ``filenames`` it has) from huggingface_hub's cache or the Hub.

    Online, ``HF_ENDPOINT`` is first asked once, within ``SWINKIT_REMOTE_TIMEOUT``: an endpoint that does not
    answer falls back to the cache at once, where huggingface_hub would retry for minutes."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT")  # read now, so a change after import still counts
    silent = offline() or remote.unanswered(endpoint or HUB_ENDPOINT)
    not_cached = None
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, endpoint=endpoint, local_files_only=bool(silent)))
        except LocalEntryNotFoundError as err:
            not_cached = err
        except EntryNotFoundError:
            continue
        except (HfHubHTTPError, OSError) as err:
            raise DownloadError(f"hf-hub:{repo_id}: {' '.join(str(err).split())[:300]}. Check the repository id, "
                                "HF_TOKEN for a private one, or HF_ENDPOINT for a mirror") from err  # fmt: skip
    if not_cached is not None:
        reason = silent if isinstance(silent, str) else " ".join(str(not_cached).split())[:200]
        raise DownloadError(
            f"hf-hub:{repo_id} is not in the Hugging Face cache and the Hub cannot be reached ({reason}). Set "
            "HF_ENDPOINT to a reachable mirror, fill the cache where the Hub is reachable (`swinkit download "
            "NAME.TAG` with the same HF_HOME), or pass a local file instead (pretrained='/path/to/file'; CLI: "
            "--weights FILE)"
        )
    raise DownloadError(f"hf-hub:{repo_id} holds none of {', '.join(filenames)}; it is not a weights repository")

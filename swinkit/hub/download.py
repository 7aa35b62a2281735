"""Fetching weights: release files by URL into swinkit's cache, Hugging Face Hub repositories through huggingface_hub.

A URL download streams into a temporary file beside its cache entry with a progress bar, and is renamed to its final
name only when it is complete (as many bytes as the server announced) and its SHA-256 agrees with the published one
(torchvision's file names carry its first 8 hex digits). Without a published hash, the SHA-256 is recorded at the
first download (``<file>.sha256``) and checked each time the cached file is used, so a cached file that changed later
is refused instead of loaded. A failed download leaves nothing under the final name; the next try starts afresh.

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
import hashlib
import http.client
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from ..core import remote
from ..core.atomic import write_atomic
from ..core.errors import ConfigError, DownloadError

log = logging.getLogger(__name__)

GITHUB = "https://github.com/"
HASH_SUFFIX = ".sha256"
VERSION_SUFFIX = ".source"  # which remote object a cached copy was made from
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what a Hub repository holds its weights in, in order
TIMEOUT_S = 60
_CHUNK = 1 << 20
_TRUE = ("1", "true", "yes", "on")


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
    the key, whichever mirror served it)."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if not segments or any(s in (".", "..") for s in segments) or not parts.hostname:
        raise ConfigError(f"{url}: not the URL of a checkpoint file; give the URL of the file itself")
    root = cache_dir() if parts.scheme in ("http", "https") else cache_dir() / parts.scheme
    return root.joinpath(parts.hostname, *segments)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _record(path: Path) -> Path:
    return path.with_name(path.name + HASH_SUFFIX)


def _verify_cached(path: Path, sha256: str, url: str) -> None:
    """Refuse a cached file whose SHA-256 is not the published one or the one recorded when it was downloaded."""
    actual = _sha256(path)
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


def _copy_into_cache(path: Path, source: str, opened, sha256: str, progress: bool) -> Path:
    """Stream ``opened()`` (a context manager yielding a readable binary stream and its announced size or None) into
    ``path`` atomically, checking the size and the published hash, then record the SHA-256 beside it."""
    digest = hashlib.sha256()

    def write(tmp: str) -> None:
        received = 0
        with (
            opened() as (stream, total),
            open(tmp, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name, disable=not progress,
                 leave=False) as bar,
        ):  # fmt: skip
            while chunk := stream.read(_CHUNK):
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

    write_atomic(path, write)
    write_atomic(_record(path), lambda tmp: Path(tmp).write_text(digest.hexdigest() + "\n"))
    log.info("downloaded %s to %s (SHA-256 %s)", source, path, digest.hexdigest())
    return path


def _cached_or_offline(path: Path, sha256: str, source: str) -> bool:
    """True when ``path`` holds the (verified) file; raises when offline and it does not."""
    if path.is_file():
        _verify_cached(path, sha256, source)
        return True
    if offline():
        raise unreachable(source, path, "offline: SWINKIT_OFFLINE or HF_HUB_OFFLINE is set and the file is not cached")
    return False


def fetch_url(url: str, *, sha256: str = "", progress: bool = True) -> Path:
    """The cached file of an http(s) ``url``, downloaded first if it is not cached (see the module docstring)."""
    path, source = cached_path(url), mirrored(url)
    if _cached_or_offline(path, sha256, source):
        return path

    @contextlib.contextmanager
    def opened():
        try:
            with urllib.request.urlopen(source, timeout=TIMEOUT_S) as response:
                yield response, int(response.headers.get("Content-Length") or 0) or None
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", None) or err
            raise unreachable(source, path, f"{type(err).__name__}: {reason}") from err

    return _copy_into_cache(path, source, opened, sha256, progress)


def fetch_remote(url: str, *, progress: bool = True, exclude: tuple[str, ...] = ()) -> Path:
    """The cached copy of a file, or of a directory (a training checkpoint: every file under it), on an fsspec file
    system (``s3://``, ``gs://``, ``hf://``, ``memory://``, ...); credentials and endpoints as
    ``swinkit.core.remote`` says. A cached file is used again only while the remote object is the one it was copied
    from (same size and ETag or modification time), so a checkpoint that a run has since rewritten is fetched anew;
    offline, the cached copy is used as it is. Files of a directory named in ``exclude`` are left out (a trainer
    state where only the weights are needed)."""
    path = cached_path(url)
    if offline():
        if path.is_dir():
            return path
        _cached_or_offline(path, "", url)
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
    wanted = set()
    for name, entry in sorted(listing.items()):
        relative = name[len(key.rstrip("/")) :].lstrip("/")
        if relative in exclude:
            continue
        wanted.add(path / relative)
        _fetch_remote_file(fs, name, f"{url.rstrip('/')}/{relative}", path / relative, entry, progress)
    for stale in [p for p in path.rglob("*") if p.is_file() and not p.name.endswith((HASH_SUFFIX, VERSION_SUFFIX))]:
        if stale not in wanted:  # removed from the remote directory since the last copy
            stale.unlink()
    return path


def _fetch_remote_file(fs, key: str, url: str, path: Path, info: dict, progress: bool) -> Path:
    stamp = next((info[k] for k in ("ETag", "etag", "md5", "mtime", "LastModified") if info.get(k)), "")
    version = json.dumps({"size": info.get("size"), "stamp": str(stamp)})
    record = path.with_name(path.name + VERSION_SUFFIX)
    if path.is_file() and record.is_file() and record.read_text() == version:
        _verify_cached(path, "", url)
        return path

    @contextlib.contextmanager
    def opened():
        try:
            with fs.open(key, "rb") as stream:
                yield stream, info.get("size")
        except DownloadError:
            raise
        except Exception as err:
            raise DownloadError(remote.cannot_read(url, err)) from err

    _copy_into_cache(path, url, opened, "", progress)
    write_atomic(record, lambda tmp: Path(tmp).write_text(version))
    return path


def fetch_hub(repo_id: str, *, filenames: tuple[str, ...] = HUB_FILES) -> Path:
    """A Hub repository's weight file (the first of ``filenames`` it has) from huggingface_hub's cache or the Hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT")  # read now, so a change after import still counts
    not_cached = None
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, endpoint=endpoint, local_files_only=offline()))
        except LocalEntryNotFoundError as err:
            not_cached = err
        except EntryNotFoundError:
            continue
        except (HfHubHTTPError, OSError) as err:
            raise DownloadError(f"hf-hub:{repo_id}: {' '.join(str(err).split())[:300]}. Check the repository id, "
                                "HF_TOKEN for a private one, or HF_ENDPOINT for a mirror") from err  # fmt: skip
    if not_cached is not None:
        raise DownloadError(
            f"hf-hub:{repo_id} is not in the Hugging Face cache and the Hub cannot be reached "
            f"({' '.join(str(not_cached).split())[:200]}). Set HF_ENDPOINT to a reachable mirror, fill the cache "
            "where the Hub is reachable (`swinkit download NAME.TAG` with the same HF_HOME), or pass a local file "
            "instead (pretrained='/path/to/file'; CLI: --weights FILE)"
        )
    raise DownloadError(f"hf-hub:{repo_id} holds none of {', '.join(filenames)}; it is not a weights repository")

"""Paths on other file systems (``s3://``, ``gs://``, ``http(s)://``, ``hf://``, ``memory://``, ``file://``) through
fsspec and its own backends.

Credentials and endpoints come from each backend's usual environment (for S3: ``AWS_PROFILE`` or
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for a non-AWS service such as OBS or MinIO),
never from swinkit's config. A file system is built afresh for each call, so an environment changed since the last
call is the one used.

An endpoint that does not answer is given up on within bounds: ``SWINKIT_REMOTE_TIMEOUT`` seconds (default 15) to
connect and for each read, two attempts per request for S3 (unless ``AWS_MAX_ATTEMPTS`` says otherwise) and no
retry loop of s3fs's own on top, so an unresponsive S3 endpoint fails in about a minute, not seven.
"""

from __future__ import annotations

import math
import os
import posixpath

from .errors import ConfigError, MissingExtraError

CREDENTIALS_HINT = (
    "credentials and endpoints come from the backend's environment (for S3: AWS_PROFILE or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, and AWS_ENDPOINT_URL for a non-AWS service such as OBS or MinIO); SWINKIT_REMOTE_TIMEOUT "
    "is how many seconds an endpoint that does not answer is waited for"
)
REMOTE_TIMEOUT_S = 15.0
BACKEND_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
                    "http": "aiohttp", "https": "aiohttp"}


def is_remote(path: object) -> bool:
    """True for a URL on a file system other than the local one (``file://`` paths are local)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def local(path: str) -> str:
    """``path`` without a ``file://`` prefix."""
    return path[len("file://") :] if path.startswith("file://") else path


def env_number(name: str, default: float) -> float:
    """The positive number in environment variable ``name``, or ``default`` when it is unset.

    Raises:
        ConfigError: a value that is not a positive finite number (names the variable).
    """
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={text[:40]!r}: give a positive number")
    return value


def _options(scheme: str) -> dict:
    """The backend's own settings that bound how long an unresponsive endpoint is waited for."""
    timeout = env_number("SWINKIT_REMOTE_TIMEOUT", REMOTE_TIMEOUT_S)
    if scheme in ("s3", "s3a"):
        config = {"connect_timeout": timeout, "read_timeout": timeout}
        if not os.environ.get("AWS_MAX_ATTEMPTS"):
            config["retries"] = {"max_attempts": 2, "mode": "standard"}
        return {"config_kwargs": config}
    if scheme in ("http", "https"):
        import aiohttp

        return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout)}}
    return {}


def filesystem(url: str):
    """``(file system, path on it)`` for ``url`` (a local path gives the local file system).

    Raises:
        MissingExtraError: the scheme's fsspec backend is not installed (names the package).
        ConfigError: a scheme fsspec does not know.
    """
    import fsspec

    scheme = url.split("://", 1)[0] if "://" in url else "file"
    try:
        fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True, **_options(scheme))
    except ImportError as err:
        package = BACKEND_PACKAGES.get(scheme, "the file system's package")
        raise MissingExtraError(f"{url}: reading {scheme}:// needs {package} (pip install {package})") from err
    except ValueError as err:
        raise ConfigError(f"{url}: {scheme}:// is no file system fsspec knows ({err}); give a local path or an "
                          "s3://, gs://, http(s)://, hf:// URL") from err  # fmt: skip
    if scheme in ("s3", "s3a"):
        fs.retries = 1  # s3fs's own loop around botocore's attempts: one try, or its retries multiply botocore's
    return fs, path


def unanswered(url: str) -> str | None:
    """Why the HTTP(S) endpoint ``url`` gives no answer within ``SWINKIT_REMOTE_TIMEOUT`` (one request), or None
    when it answers at all (any status)."""
    import urllib.error
    import urllib.request

    timeout = env_number("SWINKIT_REMOTE_TIMEOUT", REMOTE_TIMEOUT_S)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as err:
        return f"{url} did not answer within SWINKIT_REMOTE_TIMEOUT={timeout:g} s ({reason(err)})"


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for a local path or a URL (URLs always join with ``/``)."""
    if is_remote(root):
        return posixpath.join(root, *parts)
    return os.path.join(local(root), *parts)


def reason(err: BaseException) -> str:
    """A backend's error in one short line (backends raise their own types with multi-line messages)."""
    return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}".rstrip(": ")


def cannot_read(url: str, err: BaseException) -> str:
    """The message for a backend error while reading ``url``: what it said, and where credentials come from."""
    return f"could not read {url} ({reason(err)}); {CREDENTIALS_HINT}"


def exists(url: str) -> bool:
    """Whether ``url`` names a file or directory. Unlike ``fs.exists``, which some backends answer with False when
    they cannot reach the service, a backend error (no endpoint, no credentials) is raised."""
    fs, path = filesystem(url)
    try:
        fs.info(path)
    except FileNotFoundError:
        return False
    return True

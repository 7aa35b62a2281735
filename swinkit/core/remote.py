"""Paths on other file systems (``s3://``, ``gs://``, ``http(s)://``, ``hf://``, ``memory://``, ``file://``) through
fsspec and its own backends.

Credentials and endpoints come from each backend's usual environment (for S3: ``AWS_PROFILE`` or
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for a non-AWS service such as OBS or MinIO),
never from swinkit's config. A file system is built afresh for each call, so an environment changed since the last
call is the one used.
"""

from __future__ import annotations

import os
import posixpath

from .errors import ConfigError, MissingExtraError

CREDENTIALS_HINT = (
    "credentials and endpoints come from the backend's environment (for S3: AWS_PROFILE or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, and AWS_ENDPOINT_URL for a non-AWS service such as OBS or MinIO)"
)
BACKEND_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


def is_remote(path: object) -> bool:
    """True for a URL on a file system other than the local one (``file://`` paths are local)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def local(path: str) -> str:
    """``path`` without a ``file://`` prefix."""
    return path[len("file://") :] if path.startswith("file://") else path


def filesystem(url: str):
    """``(file system, path on it)`` for ``url`` (a local path gives the local file system).

    Raises:
        MissingExtraError: the scheme's fsspec backend is not installed (names the package).
        ConfigError: a scheme fsspec does not know.
    """
    import fsspec

    scheme = url.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except ImportError as err:
        package = BACKEND_PACKAGES.get(scheme, "the file system's package")
        raise MissingExtraError(f"{url}: reading {scheme}:// needs {package} (pip install {package})") from err
    except ValueError as err:
        raise ConfigError(f"{url}: {scheme}:// is no file system fsspec knows ({err}); give a local path or an "
                          "s3://, gs://, http(s)://, hf:// URL") from err  # fmt: skip


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

"""Checkpoints in object storage: fsspec URLs (s3://, gs://, hf://, memory://, file://) as IN and OUT.

Nothing here imports fsspec until a URL is actually used, so plain-file runs pay nothing and
need no extra installed. Reading is one sequential stream (`remote.input`), writing goes through
an upload that is published only after the self-check (`remote.output`). docs/remote.md says
what each store costs and guarantees.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fp8stream.errors import UsageError
from fp8stream.io.storage import scheme_of

# The extra that brings each store's driver (pyproject.toml); the error names it.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "hf": "hf"}
_DRIVERS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "hf": "huggingface_hub"}
ENV_OPTIONS = "FP8STREAM_STORAGE_OPTIONS"  # JSON, like --storage-options (read by Ray workers too)

_options: dict[str, Any] = {}


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """--storage-options JSON (an object); a user error in one line when it is not one."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--storage-options: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(value, dict):
        raise UsageError("--storage-options: must be a JSON object, e.g. '{\"anon\": true}'")
    return value


def configure(options: dict[str, Any]) -> None:
    """Storage options for every URL this process and its children (--jobs workers) open;
    they go to fsspec.filesystem."""
    _options.clear()
    _options.update(options)
    if options:
        os.environ[ENV_OPTIONS] = json.dumps(options)


def storage_options() -> dict[str, Any]:
    if _options:
        return dict(_options)
    return parse_storage_options(os.environ.get(ENV_OPTIONS))


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a URL; a missing driver is one line naming the extra."""
    scheme = scheme_of(url)
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:
        raise UsageError(f"{url}: remote paths need fsspec: pip install 'fp8stream[remote]'") from None
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError:
        extra = _EXTRAS.get(scheme, "remote")
        raise UsageError(f"{url}: {scheme}:// needs {_DRIVERS.get(scheme, 'its fsspec driver')}: "
                         f"pip install 'fp8stream[{extra}]'") from None
    except ValueError:
        raise UsageError(f"{url}: unknown protocol {scheme}://") from None
    options = storage_options()
    if scheme in ("s3", "s3a"):
        options = {**s3_environment_options(), **options}
    try:
        return url_to_fs(url, **options)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{url}: bad storage options ({e})") from None


def s3_environment_options() -> dict[str, Any]:
    """AWS_ENDPOINT_URL is read by botocore itself in recent versions; we pass it too so that
    older ones (and S3-compatible stores set up that way) reach the same endpoint."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"endpoint_url": endpoint} if endpoint else {}

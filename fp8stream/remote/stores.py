"""What differs between stores: existence, part sizes, left-over uploads, exclusive publish.

Only S3 (s3fs) has multipart uploads and conditional writes; other fsspec stores get the
generic path (`autocommit=False` then `commit()`, which for memory:// and file:// writes the
object in one step at commit). docs/remote.md lists the guarantees per store.
"""

from __future__ import annotations

import json
from typing import Any

from fp8stream.errors import FP8StreamError, OutputError, UsageError

MIN_PART = 5 << 20  # S3's smallest part (all but the last)
MAX_PARTS = 9000  # S3 allows 10,000; leave room for the uncertain compressed sizes
DEFAULT_PART = 16 << 20  # size unknown (zstd output): 16 MB parts reach 140 GB


def is_s3(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "s3" in protocol


def part_size(nbytes: int | None) -> int:
    """The upload part (and write buffer) size: at least 5 MB, enough for the output to fit
    in MAX_PARTS parts, whole MiB. It is memory held per run, so no larger than needed."""
    if nbytes is None:
        return DEFAULT_PART
    need = -(-nbytes // MAX_PARTS)
    return max(MIN_PART, -(-need // (1 << 20)) << 20)


def open_unpublished(fs: Any, path: str, mode: str, kwargs: dict[str, Any]) -> Any:
    """A file object for `path` that is published only by its commit(). fsspec's memory://
    store ignores autocommit=False and publishes at open (outside a transaction), so its file
    is made here, unregistered, and registered by commit()."""
    if "memory" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
        from fsspec.implementations.memory import MemoryFile
        return MemoryFile(fs, fs._strip_protocol(path))
    return fs.open(path, mode, **kwargs)


def exists(fs: Any, path: str, url: str) -> bool:
    try:
        fs.invalidate_cache(path)
        return bool(fs.exists(path))
    except PermissionError:
        raise FP8StreamError(f"{url}: permission denied") from None
    except Exception as e:
        raise FP8StreamError(f"{url}: cannot reach the store ({_first_line(e)})") from None


def split_s3(path: str) -> tuple[str, str]:
    bucket, _, key = path.partition("/")
    return bucket, key


def pending_uploads(fs: Any, path: str) -> list[dict[str, Any]]:
    """Incomplete multipart uploads of exactly this key (S3 only)."""
    if not is_s3(fs):
        return []
    bucket, key = split_s3(path)
    out = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
    return [u for u in out.get("Uploads", []) if u.get("Key") == key]


def abort_stale_uploads(fs: Any, path: str) -> int:
    """Abort incomplete uploads to this key, left by runs killed before they could discard
    them. Two live runs writing one key would race anyway (only one commit can win with
    create-exclusive); the later one starting takes the key."""
    try:
        stale = pending_uploads(fs, path)
        bucket, key = split_s3(path)
        for upload in stale:
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload["UploadId"])
    except Exception as e:
        raise OutputError(f"{path}: cannot list or abort left-over uploads ({_first_line(e)})") from None
    return len(stale)


RECORD_SUFFIX = ".fp8stream.json"  # the record of a store without user metadata, beside the object


def write_record(fs: Any, path: str, metadata: dict[str, str]) -> None:
    """What the zoo records about an output (its input's identity, the options) on a store
    without user metadata: a small sidecar object, written before the output is committed, so
    an output never exists without it; it counts only while the output exists (read_record).
    On S3 the record is the object's own metadata instead, set on the upload (atomic with it)."""
    fs.pipe_file(path + RECORD_SUFFIX, json.dumps(metadata, sort_keys=True).encode())


def read_record(fs: Any, path: str) -> dict[str, str] | None:
    """The output's record (S3 metadata or sidecar), or None when the output does not exist."""
    try:
        if is_s3(fs):
            return dict(fs.metadata(path, refresh=True))
        fs.invalidate_cache(path)
        if not fs.exists(path):
            return None
        value = json.loads(fs.cat_file(path + RECORD_SUFFIX))
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def publish_exclusive_error(url: str, e: BaseException) -> FP8StreamError:
    """The commit failed: a create-exclusive conflict (someone wrote the key meanwhile) is a
    usage error like an existing OUT; anything else is a write error."""
    text = _first_line(e)
    if "PreconditionFailed" in text or "412" in text or isinstance(e, FileExistsError):
        return UsageError(f"{url}: was created by someone else while we wrote it (use --force to replace it)")
    if isinstance(e, FP8StreamError):
        return e
    return OutputError(f"{url}: cannot publish the object ({text})")


def _first_line(e: BaseException) -> str:
    return (str(e) or type(e).__name__).splitlines()[0]

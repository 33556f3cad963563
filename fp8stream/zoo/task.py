"""One checkpoint, run inside a Ray worker: the same `calibrate_file` as the CLI, so the output
is byte-identical to a local run; the input pinned to the version the driver listed; the input's
identity recorded on the output object.

A failure of the file itself (bad input, exists, write error) comes back as a failed report and
is not retried; only the death of the worker or its node makes Ray run the task again.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from typing import Any

from fp8stream.batch import calibrate_one
from fp8stream.io.storage import locate, scheme_of
from fp8stream.remote import configure, filesystem
from fp8stream.remote.input import pin
from fp8stream.remote.location import UrlLocation
from fp8stream.remote.output import record_metadata
from fp8stream.remote.stores import is_s3
from fp8stream.report import FileReport
from fp8stream.rewrite import RewriteOptions
from fp8stream.zoo.identity import recorded


def run_one(options: RewriteOptions, pins: dict[str, str], record_url: str, metadata: dict[str, str] | None,
            storage: dict[str, Any]) -> FileReport:
    """Calibrate options.input into options.output, each object read at the ETag/version in
    `pins`; `record_url` (the output, or a sharded output's index) gets `metadata`. Never
    raises for what a user can cause."""
    configure(storage)
    if _written_by_an_earlier_attempt(options, record_url, metadata):
        return FileReport(options.input, options.output, status="ok", exit_code=0)
    if _half_published_by_an_earlier_attempt(options, record_url, metadata):
        options = dataclasses.replace(options, force=True)  # our own shards: replace them
    for url, tag in pins.items():
        pin(url, tag)
    _make_folder(record_url)
    if options.output is not None:  # read by the upload; a local output records nothing
        record_metadata(options.output, metadata)
    try:
        report = calibrate_one(options)
    except Exception as e:  # a bug: one line in the report, the traceback in Ray's log
        first = (str(e) or type(e).__name__).splitlines()[0]
        report = FileReport(options.input, options.output, status="failed", error=f"internal error: {first}",
                            exit_code=1)
    finally:
        for url in pins:
            pin(url, None)
        if options.output is not None:
            record_metadata(options.output, None)
    return report


def _make_folder(record_url: str) -> None:
    """A listing mirrors its source's folders: on a file system (a path, file://, e.g. a shared
    NFS mount) the output's folder is made, as object stores need no folders."""
    if scheme_of(record_url) != "file":
        return
    parent = posixpath.dirname(record_url.removeprefix("file://"))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError:
        pass  # the output's own check reports the folder in one line


def _half_published_by_an_earlier_attempt(options: RewriteOptions, record_url: str,
                                          metadata: dict[str, str] | None) -> bool:
    """A worker killed while committing a sharded output's shards, before its index: on S3
    each shard carries the task's record too, so the retry can tell its own shards from
    someone else's and replace them. (Elsewhere it reports the folder as existing.)"""
    if options.output is None or metadata is None or record_url == options.output or not _uploaded(options.output):
        return False
    fs, path = filesystem(options.output)
    if not is_s3(fs) or recorded(record_url) is not None:
        return False
    objects = fs.find(path.rstrip("/"))
    return bool(objects) and all(recorded(f"s3://{o}") == metadata for o in objects)


def _written_by_an_earlier_attempt(options: RewriteOptions, record_url: str, metadata: dict[str, str] | None) -> bool:
    """A worker killed after its upload was committed leaves the finished object: the retry of
    that task finds it with this very input identity and options, and must not fail on it
    (create-exclusive) or redo it."""
    if options.output is None or metadata is None or not _uploaded(options.output):
        return False
    return recorded(record_url) == metadata


def _uploaded(output: str) -> bool:
    """Whether the output is an upload (a URL): only those carry the task's record."""
    return isinstance(locate(output), UrlLocation)

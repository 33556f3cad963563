"""A sharded output in a store: `s3://b/model/` gets one object per shard and the index last.

A store cannot publish several objects at once, so the index is the commit point: every
shard's upload is checked and committed first (each one appears complete or not at all, as
`remote.output` does for one file), and only then is the index written. A reader that goes by
the index (diffusers, transformers, ComfyUI's loaders, `fp8stream` itself) never sees a half
model; if a shard's commit fails, the shards already committed are deleted and there is no
index. With --force an existing index is deleted before any shard is replaced, so the old
model is never listed with new shards.
"""

from __future__ import annotations

import contextlib
from typing import Any, BinaryIO

from fp8stream.io.compression import ZstdSettings
from fp8stream.io.sink import OutputSink
from fp8stream.remote import filesystem
from fp8stream.remote.output import RemoteOutput, metadata_for, record_metadata
from fp8stream.remote.stores import is_s3


class RemoteShardedOutput:
    """The `io.storage.FolderTarget` of a URL: `open(shard)` per shard, `finalize(index, blob)`
    once all are complete; the shards are committed, then the index, when the block succeeds."""

    def __init__(self, target: str, force: bool, zstd: ZstdSettings | None = None) -> None:
        self.target, self.force, self.zstd = target.rstrip("/"), force, zstd
        self._open: list[tuple[str, OutputSink]] = []  # entered, not yet committed or discarded
        self._index: tuple[str, bytes] | None = None
        self.sinks: dict[str, OutputSink] = {}

    def __enter__(self) -> "RemoteShardedOutput":
        return self

    def open(self, shard: str) -> tuple[OutputSink, BinaryIO]:
        url = self._url(shard)
        record = metadata_for(self.target)
        if record is not None and is_s3(filesystem(url)[0]):  # lets a zoo retry tell its own shards
            record_metadata(url, record)
        sink = OutputSink(url, RemoteOutput(url, self.zstd is not None), self.zstd)
        try:
            stream = sink.__enter__()  # the upload takes the metadata when it is opened
        finally:
            record_metadata(url, None)
        self._open.append((shard, sink))
        self.sinks[shard] = sink
        return sink, stream

    def finalize(self, index_name: str, blob: bytes) -> None:
        """Kept until every shard is committed (in __exit__)."""
        self._index = (index_name, blob)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._discard_open(exc_type, exc, tb)
            return
        assert self._index is not None, "finalize() was not called"
        committed: list[str] = []
        try:
            if self.force:
                self._delete([self._url(self._index[0])])
            while self._open:
                shard, sink = self._open.pop(0)
                sink.__exit__(None, None, None)  # checked already (pipeline.check); committed here
                committed.append(shard)
            self._write_index(*self._index)
        except BaseException as e:
            self._discard_open(type(e), e, None)
            self._delete([self._url(s) for s in committed])
            raise

    def _discard_open(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Every shard not yet committed: its upload aborted (errors of the first kept)."""
        while self._open:
            _, sink = self._open.pop(0)
            with contextlib.suppress(Exception):
                sink.__exit__(exc_type, exc, tb)

    def _write_index(self, name: str, blob: bytes) -> None:
        url = self._url(name)
        record_metadata(url, metadata_for(self.target))  # the zoo's record goes on the commit point
        try:
            with RemoteOutput(url) as f:
                f.write(blob)
        finally:
            record_metadata(url, None)

    def _url(self, name: str) -> str:
        return self.target + "/" + name

    def _delete(self, urls: list[str]) -> None:
        """Best effort: shards left without an index are no model to any loader."""
        for url in urls:
            fs, path = filesystem(url)
            with contextlib.suppress(Exception):
                if fs.exists(path):
                    fs.rm_file(path)


def _first_line(e: BaseException) -> str:
    return (str(e) or type(e).__name__).splitlines()[0]

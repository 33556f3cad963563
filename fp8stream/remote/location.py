"""A URL as an `io.storage.Location`: what the reader, the writers and the index reader ask of a
local path, answered by the store (remote.input, remote.output, remote.files, remote.sharded).
The entry points hand this class to `io.storage.open_urls_with`; nothing below them imports it.

An object store has no folders: a "folder" is a key prefix, so `s3://b/model` and `s3://b/model/`
name the same one.
"""

from __future__ import annotations

from typing import Iterable

from fp8stream.io.compression import ZstdSettings
from fp8stream.io.sink import OutputSink
from fp8stream.io.storage import FolderTarget, InputSource, Stored
from fp8stream.remote import files
from fp8stream.remote.input import identity_tag, object_info, open_remote_file, open_remote_stream
from fp8stream.remote.output import RemoteOutput, check_remote_folder, check_remote_output, expect_size
from fp8stream.remote.sharded import RemoteShardedOutput


class UrlLocation:
    local_path = None

    def __init__(self, url: str) -> None:
        self.path = self.url = url

    def open_stream(self) -> InputSource:
        """Read once, front to back, through a read-ahead cache; no size, like a pipe (the end
        of the data is checked by reading past it)."""
        return InputSource(open_remote_stream(self.url), None, self.url, self.url)  # type: ignore[arg-type]

    def open_ranged(self) -> InputSource:
        remote = open_remote_file(self.url)
        return InputSource(remote, remote.size, self.url, self.url, read_at=remote.read_at)  # type: ignore[arg-type]

    def stored(self) -> Stored:
        info = object_info(self.url)
        return Stored(int(info.get("size") or 0), identity_tag(info))

    def is_file(self) -> bool:
        return files.is_file(self.url)

    def is_dir(self) -> bool:
        return files.is_dir(self.url)

    def names(self) -> list[str]:
        return files.names_in(self.url)

    def files_present(self, names: Iterable[str]) -> set[str]:
        return set(files.names_in(self.url)) & set(names)  # one listing, not a request per name

    def child(self, name: str) -> str:
        return self.url.rstrip("/") + "/" + name

    def parent(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[0]

    def read_small(self, limit: int) -> bytes:
        return files.read_small(self.url, limit)

    def check_target(self, input_path: str | None, force: bool) -> None:
        check_remote_output(self.url, input_path, force)

    def check_folder_target(self, input_folder: str, force: bool) -> None:
        check_remote_folder(self.url, input_folder, force)

    def reserve(self, nbytes: int) -> None:
        expect_size(self.url, nbytes)

    def open_sink(self, zstd: ZstdSettings | None) -> OutputSink:
        """An upload published only after the self-check (docs/remote.md)."""
        return OutputSink(self.url, RemoteOutput(self.url, zstd is not None), zstd)

    def open_folder_target(self, input_folder: str, force: bool, zstd: ZstdSettings | None) -> FolderTarget:
        check_remote_folder(self.url, input_folder, force)
        return RemoteShardedOutput(self.url, force, zstd)

"""The zoo's work list: (IN, OUT) pairs from a file or from two prefixes, each probed once in the
driver for what it is (size, ETag/version, header digest) and what it needs (memory)."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field

from fp8stream.errors import FP8StreamError, UsageError
from fp8stream.formats.shards import INDEX_SUFFIX, merged_header, shard_index
from fp8stream.io.compression import ZstdSettings, compression_memory
from fp8stream.io.header import Header
from fp8stream.io.reader import open_positioned, read_input_header
from fp8stream.io.storage import locate
from fp8stream.memory import BASE_MEMORY, run_memory
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.remote import filesystem
from fp8stream.zoo.identity import InputIdentity

SUFFIXES = (".safetensors", ".safetensors.zst")


@dataclass
class ZooItem:
    input: str
    output: str
    identity: InputIdentity | None = None
    memory: int = BASE_MEMORY
    error: str | None = None  # the probe failed: reported, not submitted
    pins: dict[str, str] = field(default_factory=dict)  # each object read -> the ETag/version listed
    index_name: str | None = None  # a sharded model: its index, written last, holds the record

    @property
    def record_url(self) -> str:
        """The object whose record says whether this item is done: the output, or the index
        of a sharded output (its commit point)."""
        return self.output.rstrip("/") + "/" + self.index_name if self.index_name else self.output


def read_pairs(path: str) -> list[tuple[str, str]]:
    """'IN OUT' per line; blank lines and lines starting with # are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the listing ({e.strerror})") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 2:
            raise UsageError(f"{path}:{number}: expected 'IN OUT', got {len(parts)} fields")
        pairs.append((parts[0], parts[1]))
    return pairs


def pairs_from_prefixes(source: str, dest: str) -> list[tuple[str, str]]:
    """Every *.safetensors[.zst] under `source`, written under `dest` at the same relative path;
    a folder holding a *.safetensors.index.json is one sharded model (its shards not listed
    on their own), written as a folder."""
    fs, root = filesystem(source)
    try:
        listed = sorted(fs.find(root))
    except FileNotFoundError:
        raise UsageError(f"{source}: no such prefix") from None
    except Exception as e:
        raise FP8StreamError(f"{source}: cannot list ({(str(e) or type(e).__name__).splitlines()[0]})") from None
    root = root.rstrip("/")
    sharded = {posixpath.dirname(p) for p in listed if p.endswith(INDEX_SUFFIX)}
    found = [p for p in listed if p.endswith(SUFFIXES) and posixpath.dirname(p) not in sharded]
    found = sorted(found + [p for p in sharded if p != root])
    src, out = source.rstrip("/"), dest.rstrip("/")
    return [(src + "/" + posixpath.relpath(p, root), out + "/" + posixpath.relpath(p, root)) for p in found]


def check_pairs(pairs: list[tuple[str, str]]) -> None:
    outputs = [o for _, o in pairs]
    if len(set(outputs)) != len(outputs):
        dup = next(o for o in outputs if outputs.count(o) > 1)
        raise UsageError(f"{dup}: named as the output of more than one input")
    for i, o in pairs:
        if i == o:
            raise UsageError(f"{o}: output is the input")


def probe(item: ZooItem, zstd_out: ZstdSettings | None, settings: CalibrationSettings | None = None) -> None:
    """Identity and memory estimate from the header(s) (`memory.run_memory` of the run's
    settings, None: the default's, as --jobs estimates, plus zstd windows); a failure is kept in
    item.error and reported."""
    try:
        input_at = locate(item.input)
        index = shard_index(input_at)
        files = [index.location, *index.shards.values()] if index else [input_at]
        headers, window = [], 0
        for file in files[1:] if index else files:
            header, w = _read_header(file.path)
            headers.append(header)
            window = max(window, w)
        records = [file.stored() for file in files]  # (size in the store, version id, ETag or mtime)
    except FP8StreamError as e:
        item.error = str(e)
        return
    header = merged_header(headers) if index else headers[0]
    item.index_name = index.name if index else None
    item.pins = {file.path: tag for file, (_, tag) in zip(files, records, strict=True) if tag}
    tags = [tag or "" for _, tag in records]
    tag = (tags[0] or None) if not index else hashlib.sha256("\n".join(tags).encode()).hexdigest()[:32]
    item.identity = InputIdentity(sum(size for size, _ in records), tag, header_digest(header))
    extra = compression_memory(zstd_out.level, zstd_out.threads) if zstd_out else 0
    item.memory = run_memory(header.tensors, settings or CalibrationSettings()) + window + extra


def _read_header(path: str) -> tuple[Header, int]:
    """A file's header (ranged reads of a URL) and its zstd window (0 when not compressed)."""
    source = open_positioned(path)
    try:
        return read_input_header(source), getattr(source.stream, "window_size", 0) if source.compressed else 0
    finally:
        source.close()


def header_digest(header: Header) -> str:
    tensors = [(t.name, t.dtype, t.shape, t.begin, t.nbytes) for t in header.tensors]
    text = repr(tensors) + repr(sorted((header.metadata or {}).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]

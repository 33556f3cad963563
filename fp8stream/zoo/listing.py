"""The zoo's work list: (IN, OUT) pairs from a file or from two prefixes, each probed once in the
driver for what it is (size, ETag/version, header digest) and what it needs (memory)."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

from fp8stream.memory import BASE_MEMORY
from fp8stream.errors import FP8StreamError, UsageError
from fp8stream.io.compression import compression_memory, ZstdSettings
from fp8stream.io.header import Header
from fp8stream.io.reader import open_input, read_input_header
from fp8stream.remote import filesystem, is_remote
from fp8stream.remote.input import identity_tag, object_info
from fp8stream.zoo.identity import InputIdentity

SUFFIXES = (".safetensors", ".safetensors.zst")


@dataclass
class ZooItem:
    input: str
    output: str
    identity: InputIdentity | None = None
    memory: int = BASE_MEMORY
    error: str | None = None  # the probe failed: reported, not submitted


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
    """Every *.safetensors[.zst] under `source`, written under `dest` at the same relative path."""
    fs, root = filesystem(source)
    try:
        found = sorted(p for p in fs.find(root) if p.endswith(SUFFIXES))
    except FileNotFoundError:
        raise UsageError(f"{source}: no such prefix") from None
    except Exception as e:
        raise FP8StreamError(f"{source}: cannot list ({(str(e) or type(e).__name__).splitlines()[0]})") from None
    src = source.rstrip("/")
    out = dest.rstrip("/")
    root = root.rstrip("/")
    return [(src + "/" + posixpath.relpath(p, root), out + "/" + posixpath.relpath(p, root)) for p in found]


def check_pairs(pairs: list[tuple[str, str]]) -> None:
    outputs = [o for _, o in pairs]
    if len(set(outputs)) != len(outputs):
        dup = next(o for o in outputs if outputs.count(o) > 1)
        raise UsageError(f"{dup}: named as the output of more than one input")
    for i, o in pairs:
        if i == o:
            raise UsageError(f"{o}: output is the input")


def probe(item: ZooItem, zstd_out: ZstdSettings | None) -> None:
    """Identity and memory estimate from the header (2 x largest tensor + base, as --jobs
    estimates, plus zstd windows); a failure is kept in item.error and reported."""
    try:
        tag, size = None, None
        if is_remote(item.input):
            info = object_info(item.input)
            tag, size = identity_tag(info), int(info.get("size") or 0)
        source = open_input(item.input)
        try:
            header = read_input_header(source)
            window = getattr(source.stream, "window_size", 0) if source.compressed else 0
        finally:
            source.close()
    except FP8StreamError as e:
        item.error = str(e)
        return
    item.identity = InputIdentity(size if size is not None else header.file_bytes, tag, header_digest(header))
    largest = max((t.nbytes for t in header.tensors), default=0)
    extra = compression_memory(zstd_out.level, zstd_out.threads) if zstd_out else 0
    item.memory = 2 * largest + BASE_MEMORY + window + extra


def header_digest(header: Header) -> str:
    text = repr([(t.name, t.dtype, t.shape, t.begin, t.nbytes) for t in header.tensors]) + repr(sorted((header.metadata or {}).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]

"""What the forward pass derives from a header through diffusers, kept between runs: the
family's config, the row mapping and the layers the pass reaches (forward_pass.prepare), and
the conditioning path (the meta pass, conditioning.py). They are the same on every run of one
version of fp8stream, torch, diffusers and transformers over one header layout, and cost about
1.2 s of a full-width Flux-dev's run on 2 cores before its first copied byte (the meta pass
0.9 s of it).

An entry is a JSON file in $XDG_CACHE_HOME/fp8stream/derived (else ~/.cache/fp8stream/derived)
named by the digest of what it derives from: the versions, the package's own code that derives
it (families/, methods/forward/, names/) and the header's names, dtypes and shapes, in order.
Never required: off (FP8STREAM_NO_CACHE=1), missing, unreadable, unwritable, or failing its
checksum or its decoding, the work is done as without it, silently. Written to a temporary file
in the folder and renamed, so a reader sees a whole entry or none.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

from fp8stream.io.header import TensorInfo
from fp8stream.methods.forward.mapping import Run
from fp8stream.methods.settings import installed
from fp8stream.version import __version__

OFF = "FP8STREAM_NO_CACHE"  # set to anything but "" or "0": no entry is read or written
FORMAT = 1  # the layout of an entry; a new one misses every older entry
CODE = ("families", "methods/forward", "names")  # the package's code the entries derive from
PACKAGE = Path(__file__).resolve().parents[2]
# what reading an entry can raise: a file gone or unreadable, bad JSON or text, a wrong shape
UNREADABLE = (OSError, ValueError, LookupError, TypeError, AttributeError, SyntaxError, RecursionError, MemoryError)
T = TypeVar("T")


def folder() -> Path:
    """Where entries live (the user's cache folder)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fp8stream" / "derived"


@functools.cache
def versions() -> tuple:
    """Everything besides the header that an entry depends on (read once a process)."""
    code = hashlib.sha256()
    for part in CODE:
        for path in sorted((PACKAGE / part).rglob("*.py")):
            code.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return (FORMAT, __version__, code.hexdigest(), tuple(sys.version_info[:2]),
            installed("torch"), installed("diffusers"), installed("transformers"))


def header_key(tensors: Iterable[TensorInfo]) -> str | None:
    """The key of what is derived from a header with these tensors; None when the cache is off."""
    if os.environ.get(OFF, "") not in ("", "0"):
        return None
    digest = hashlib.sha256(repr(versions()).encode())
    for t in tensors:
        digest.update(f"{t.name}\0{t.dtype}\0{list(t.shape)}\n".encode())
    return digest.hexdigest()


def load(key: str | None, kind: str, decode: Callable[[dict], T]) -> tuple[T] | None:
    """(the entry decoded,) or None: no key, no entry, or one that is unreadable or corrupt."""
    if key is None:
        return None
    try:
        entry = json.loads((folder() / f"{key}.{kind}.json").read_text(encoding="utf-8"))
        payload = entry["payload"]
        if entry["key"] != key or entry["kind"] != kind or entry["sha256"] != _sha256(payload):
            return None
        return (decode(json.loads(payload)),)
    except UNREADABLE:
        return None


def store(key: str | None, kind: str, payload: dict | None) -> None:
    """Write an entry (no key, or nothing to keep: nothing); a folder that cannot be written is
    ignored. A None payload (a config that is not plain data) would only be read back as a miss."""
    if key is None or payload is None:
        return
    temporary = None
    try:
        text = json.dumps(payload, separators=(",", ":"))
        entry = json.dumps({"key": key, "kind": kind, "sha256": _sha256(text), "payload": text})
        where = folder()
        where.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=where, prefix=f".{key}.{kind}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(entry)
        os.replace(temporary, where / f"{key}.{kind}.json")
        temporary = None
    except (OSError, ValueError, TypeError):
        pass
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prepared_payload(config: Mapping, mapping: Mapping[str, list[Run]], reached: Iterable[str]) -> dict | None:
    """An entry of prepare's result; None when the config is not plain literals (not kept)."""
    text = repr(dict(config))
    try:
        if repr(ast.literal_eval(text)) != text:
            return None
    except UNREADABLE:
        return None
    return {"config": text, "reached": sorted(reached),
            "mapping": {target: [[r.source, r.start, r.stop] for r in runs] for target, runs in mapping.items()}}


def prepared_from(payload: dict) -> tuple[dict, dict[str, list[Run]], frozenset[str]]:
    """(config, mapping, reached) from an entry of prepared_payload."""
    config = ast.literal_eval(payload["config"])
    if not isinstance(config, dict):
        raise TypeError("config is not a dict")
    mapping = {str(target): [Run(str(s), int(a), int(b)) for s, a, b in runs]
               for target, runs in payload["mapping"].items()}
    return config, mapping, frozenset(str(n) for n in payload["reached"])

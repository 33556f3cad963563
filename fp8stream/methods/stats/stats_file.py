"""Real-data statistics: the stats file format and name matching (the method: stats_method.py).

Stats file (JSON, UTF-8), version 1:

    {"format": "fp8stream.stats", "version": 1,
     "histogram": {"lo_log2": -24, "bins_per_octave": 4, "bins": 192},
     "layers": {"<module name>": {"amax": 12.5, "calls": 40, "count": 614400,
                                   "zeros": 0, "hist": [0, 0, 3, ...]}}}

`amax` is the largest |input| seen over all forward calls; `hist[i]` counts non-zero |x| in
[2^(lo + i/b), 2^(lo + (i+1)/b)) (values outside go to the end bins). `fp8stream.record` writes
it. Plain scales are accepted too, so scales from `calibrate --json` or another tool can be
applied: a layer entry `{"input_scale": 0.01}`, a flat `{"name": 0.01, ...}` object, or a
`calibrate --json` report (its "layers" list of {"name", "scale"}).

Matching stats names to checkpoint layers, in order: `--map FILE` pairs (JSON object
{stats name: checkpoint layer}, or lines "stats_name checkpoint_layer"); exact names; the
family's diffusers -> checkpoint renames, derived from its converter (families/renames.py; a
fused layer such as `img_attn.qkv` takes the max of its parts' amax and the sum of their
histograms); a unique dot-suffix (`model.diffusion_model.x` ~ `x`; an ambiguous suffix is reported, never guessed).
Checkpoint layers left without stats are an error unless `--fallback simulate`; stats entries
that match no layer are reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fp8stream.errors import UsageError
from fp8stream.families.detect import detect_family
from fp8stream.families.renames import rename
from fp8stream.names.prefixes import bare_name, common_model_prefix

FORMAT = "fp8stream.stats"
VERSION = 1
HIST_LO_LOG2 = -24
HIST_BINS_PER_OCTAVE = 4
HIST_BINS = 48 * HIST_BINS_PER_OCTAVE  # 2^-24 .. 2^24


@dataclass
class LayerStats:
    amax: float | None = None
    hist: list[int] | None = None
    calls: int = 0
    count: int = 0
    scale: float | None = None  # a plain input scale (no statistics)
    sources: list[str] = field(default_factory=list)

    def merge(self, other: "LayerStats") -> None:
        """Fused layer: the max of the parts (one scale must cover every part's input)."""
        if other.scale is not None:
            self.scale = other.scale if self.scale is None else max(self.scale, other.scale)
        if other.amax is not None:
            self.amax = other.amax if self.amax is None else max(self.amax, other.amax)
        if other.hist is not None:
            self.hist = (list(other.hist) if self.hist is None
                         else [a + b for a, b in zip(self.hist, other.hist, strict=False)])
        self.calls += other.calls
        self.count += other.count
        self.sources += other.sources


@dataclass
class StatsFile:
    layers: dict[str, LayerStats]
    lo_log2: float = HIST_LO_LOG2
    bins_per_octave: int = HIST_BINS_PER_OCTAVE


def load_stats(path: str) -> StatsFile:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"--stats {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"--stats {path}: not a readable JSON stats file ({e})") from None
    return parse_stats(doc, path)


def parse_stats(doc, label: str = "stats") -> StatsFile:
    if isinstance(doc, dict) and doc.get("format") == FORMAT:
        if doc.get("version") != VERSION:
            raise UsageError(f"{label}: stats version {doc.get('version')!r} not supported "
                             f"(this fp8stream reads {VERSION})")
        h = doc.get("histogram", {})
        out = StatsFile({}, float(h.get("lo_log2", HIST_LO_LOG2)), int(h.get("bins_per_octave", HIST_BINS_PER_OCTAVE)))
        for name, e in doc.get("layers", {}).items():
            if not isinstance(e, dict):
                raise UsageError(f"{label}: layer {name!r} entry is not an object")
            out.layers[name] = LayerStats(
                amax=_num(e.get("amax"), label, name), hist=e.get("hist"), calls=int(e.get("calls", 0)),
                count=int(e.get("count", 0)), scale=_num(e.get("input_scale"), label, name), sources=[name])
            if out.layers[name].amax is None and out.layers[name].scale is None:
                raise UsageError(f"{label}: layer {name!r} has neither amax nor input_scale")
        return out
    if isinstance(doc, dict) and isinstance(doc.get("layers"), list):  # a `calibrate --json` report
        return StatsFile({e["name"]: LayerStats(scale=_num(e.get("scale"), label, e["name"]), sources=[e["name"]])
                          for e in doc["layers"] if isinstance(e, dict) and "name" in e})
    if isinstance(doc, dict) and all(isinstance(v, (int, float)) for v in doc.values()):
        return StatsFile({k: LayerStats(scale=_num(v, label, k), sources=[k]) for k, v in doc.items()})
    raise UsageError(f"{label}: not an fp8stream stats file, a flat {{name: scale}} object, "
                     "or a calibrate --json report")


def _num(v, label: str, name: str) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise UsageError(f"{label}: layer {name!r}: {v!r} is not a number") from None
    if not (x > 0 and x < float("inf")):
        if x == 0:
            return 0.0
        raise UsageError(f"{label}: layer {name!r}: {v!r} is not a positive finite number")
    return x



def load_map(path: str) -> dict[str, str]:
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        raise UsageError(f"--map {path}: cannot read ({e.strerror})") from None
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and all(isinstance(v, str) for v in doc.values()):
            return dict(doc)
    except ValueError:
        pass
    pairs = {}
    for i, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace("\t", " ").split()
        if len(parts) != 2:
            raise UsageError(f"--map {path}:{i}: expected 'stats_name checkpoint_layer'")
        pairs[parts[0]] = parts[1]
    return pairs


@dataclass
class Matching:
    by_layer: dict[str, LayerStats]
    how: dict[str, str]  # layer -> how it was matched
    unused: list[str]  # stats names that matched no layer
    ambiguous: dict[str, list[str]]  # stats name -> candidate layers


def match(stats: StatsFile, layers: list[str], user_map: dict[str, str] | None = None,
          family: str | None = None) -> Matching:
    layer_set = set(layers)
    pre = common_model_prefix(layers)
    family = family or detect_family(layers)
    by_layer: dict[str, LayerStats] = {}
    how: dict[str, str] = {}
    unused, ambiguous = [], {}
    suffix_index: dict[str, list[str]] = {}
    for n in layers:
        parts = n.split(".")
        for i in range(len(parts)):
            suffix_index.setdefault(".".join(parts[i:]), []).append(n)

    def put(layer: str, s: LayerStats, why: str) -> None:
        if layer in by_layer:
            by_layer[layer].merge(s)
            how[layer] = why if how[layer] == why else how[layer] + "+" + why
            if "fused" not in how[layer] and len(by_layer[layer].sources) > 1:
                how[layer] += " (fused: max of parts)"
        else:
            by_layer[layer] = LayerStats(s.amax, list(s.hist) if s.hist else None, s.calls, s.count, s.scale,
                                         list(s.sources))
            how[layer] = why

    for name, s in stats.layers.items():
        if user_map and name in user_map:
            if user_map[name] not in layer_set:
                raise UsageError(f"--map: {name!r} -> {user_map[name]!r}: no such FP8 layer in the checkpoint")
            put(user_map[name], s, "--map")
            continue
        if name in layer_set:
            put(name, s, "exact")
            continue
        if pre + name in layer_set:
            put(pre + name, s, "exact (prefix)")
            continue
        r = rename(bare_name(name), family) if family else None
        if r is not None and pre + r in layer_set:
            put(pre + r, s, f"{family} rename")
            continue
        cands = set(suffix_index.get(name, []))
        parts = name.split(".")
        for i in range(1, len(parts)):  # the stats name is longer: its suffix is a layer name
            if ".".join(parts[i:]) in layer_set:
                cands.add(".".join(parts[i:]))
        if len(cands) == 1:
            put(cands.pop(), s, "suffix")
        elif len(cands) > 1:
            ambiguous[name] = sorted(cands)
        else:
            unused.append(name)
    return Matching(by_layer, how, unused, ambiguous)



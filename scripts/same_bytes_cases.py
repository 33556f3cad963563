"""The case matrix of scripts/same_bytes.py: which `fp8stream calibrate` command lines run on
which input. A case is its argument list with placeholders: {in} the input, {out} the output
file in the case's own folder, {dir} that folder, {cases} the inputs' folder. Every case also
gets COMMON (CPU, seed 0, the JSON report)."""

from __future__ import annotations

from dataclasses import dataclass

COMMON = ("--device", "cpu", "--seed", "0", "--json", "--no-progress")
OUT = "{out}"
TARGETS = ((), ("--target", "comfy"), ("--target", "legacy"))  # () is the default, auto: --quick runs it too


@dataclass(frozen=True)
class Case:
    name: str  # unique: the input and the arguments as written here
    args: tuple[str, ...]
    stdin: str | None = None  # an input (file name under {cases}) on fd 0


def _case(input_name: str, *args: str, out: str = OUT, stdin: str | None = None) -> Case:
    source = "-" if stdin else "{cases}/" + input_name
    argv = ("calibrate", source, out, *args) if out else ("calibrate", source, *args)
    where = f"{'< ' if stdin else ''}{input_name}"
    return Case(f"{where} | {' '.join(args) or '(defaults)'}{' -> ' + out if out != OUT else ''}", argv, stdin)


def full_matrix(input_name: str, preset: str | None) -> list[Case]:
    """Every method on a family's own file: presets (none, auto, the family's) and, for the bound
    (the one method that writes any flavour), each target."""
    cases = [_case(input_name), _case(input_name, "--preset", "auto")]
    if preset:
        cases.append(_case(input_name, "--preset", preset))
    cases += [_case(input_name, "--method", "forward"), _case(input_name, "--method", "forward", "--preset", "auto")]
    for presets in ((), ("--preset", "auto")):
        cases += [_case(input_name, "--method", "simulate", *presets, *target) for target in TARGETS]
    cases += [_case(input_name, "--method", "simulate", "--sim-mode", mode) for mode in ("hybrid", "note")]
    cases.append(_case(input_name, "--method", "heuristic"))
    return cases


def flavour_matrix(input_name: str) -> list[Case]:
    """A copy in another flavour, prefix or with weight-only layers: the default, each target."""
    cases = [_case(input_name)]
    cases += [_case(input_name, "--method", "simulate", *target) for target in TARGETS]
    cases.append(_case(input_name, "--method", "heuristic"))
    return cases


def stats_cases() -> list[Case]:
    """--method stats on the tiny Flux: the recorded file, plain scales, fallback, rules."""
    flux, stats, plain = "tiny-flux-harness.safetensors", "{cases}/stats.json", "{cases}/plain-scales.json"
    return [
        _case(flux, "--stats", stats),
        _case(flux, "--method", "stats", "--stats", stats, "--stats-margin", "1"),
        _case(flux, "--stats", stats, "--rule", "percentile"),
        _case(flux, "--stats", stats, "--rule", "mse", "--preset", "auto"),
        _case(flux, "--stats", plain),
        _case(flux, "--stats", plain, "--fallback", "simulate"),
        _case("tiny-flux.safetensors", "--stats", stats, "--fallback", "simulate"),
        _case("example.safetensors", "--stats", stats, "--fallback", "simulate"),
    ]


def pipe_cases() -> list[Case]:
    """stdin, stdout, zstd both ways (spooled for the forward pass, or not), shards in and out."""
    ex, zst, flux_zst = "example.safetensors", "example.safetensors.zst", "tiny-flux.safetensors.zst"
    return [
        _case(ex, out="-"),
        _case("tiny-flux.safetensors", out="-"),
        _case(ex, "--zstd", "--zstd-threads", "2", out="-"),
        _case(ex, "--zstd-threads", "2", out="{dir}/out.safetensors.zst"),
        _case(zst, "--zstd-threads", "0", out="{dir}/out.safetensors.zst"),
        _case(zst, "--method", "simulate"),
        _case(flux_zst),
        _case(flux_zst, "--no-spool"),
        _case(flux_zst, "--method", "forward", "--no-spool"),
        _case(flux_zst, stdin=flux_zst),
        _case(flux_zst, "--no-spool", stdin=flux_zst),
        _case(flux_zst, "--method", "forward", stdin=flux_zst, out="-"),
        _case(zst, "--method", "simulate", stdin=zst, out="-"),
        _case("sharded", out="{dir}/sharded-out"),
        _case("sharded", "--method", "simulate", out="{dir}/sharded-out"),
        _case("sharded-flux"),
        _case("sharded-flux", out="{dir}/sharded-out"),
        _case("sharded-flux", "--method", "simulate", "--zstd-threads", "2", out="{dir}/out.safetensors.zst"),
        _case("sharded-flux/diffusion_pytorch_model.safetensors.index.json", "--method", "forward"),
    ]


def option_cases() -> list[Case]:
    """One case for each option that changes what is written or reported."""
    ex, small, flux = "example.safetensors", "small.safetensors", "tiny-flux.safetensors"
    batch = ("{cases}/small.safetensors", "{cases}/unknown.safetensors", "{cases}/no-fp8.safetensors")
    return [
        _case(ex, *batch[:2], "--out-dir", "{dir}/batch", "--jobs", "2", out=""),
        _case(ex, *batch, "--out-dir", "{dir}/batch", "--zstd", "--zstd-threads", "2", "--keep-going", out=""),
        _case(ex, "--include", "double_blocks.*", "--exclude", "*.img_mlp.*"),
        _case(ex, "--exclude", "double_blocks.0.*", "--exclude-untouched"),
        _case(ex, "--include", "no_such_layer.*"),
        _case("small-weight-only.safetensors", "--keep-weight-only", "--method", "simulate"),
        _case("small-scaled.safetensors", "--overwrite-scales", "--method", "simulate"),
        _case(ex, "--dry-run"),
        _case(flux, "--dry-run", "--method", "forward"),
        _case(ex, "--verify"),
        _case(small, "--method", "simulate", "--rule", "percentile", "--percentile", "99.9"),
        _case(small, "--method", "simulate", "--rule", "mse"),
        _case(small, "--method", "simulate", "--sim-mode", "hybrid", "--margin", "2", "--samples", "16"),
        _case(small, "--method", "heuristic", "--factor", "0.25"),
        _case(flux, "--forward-conditioning", "fp8"),
        _case("tiny-wan.safetensors", "--assume-input-rms", "2"),
        _case(flux, "--forward-batch", "2", "--forward-tokens", "32", "--forward-text-tokens", "8",
              "--forward-micro-batch", "1", "--forward-threads", "1", "--forward-margin", "2"),
        _case("no-fp8.safetensors"),
        _case(ex, "--seed", "1"),
    ]


def matrix(manifest: dict, quick: bool) -> list[Case]:
    """The cases for the inputs of `manifest` (name -> entry with tier and preset); the quick
    cases are among the full ones, so a quick run compares with a full one (`compare --subset`)."""
    cases: list[Case] = []
    for name, entry in manifest.items():
        if quick and entry["tier"] != "extra":
            cases += [_case(name), _case(name, "--method", "simulate")]
        elif entry["tier"] == "full":
            cases += full_matrix(name, entry["preset"])
        elif entry["tier"] == "flavour":
            cases += flavour_matrix(name)
    if not quick:
        cases += stats_cases() + pipe_cases() + option_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases

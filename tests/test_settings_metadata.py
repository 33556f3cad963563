"""The settings recorded in an output's metadata (`CalibrationSettings.describe()`) stay what they
were before each method declared its own settings (issue 23: outputs byte-identical), for every
method's defaults and the options that add or change a key.

Regenerate only for a deliberate change: `python tests/test_settings_metadata.py --write`."""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fp8stream.methods.settings import CalibrationSettings  # noqa: E402

SNAPSHOT = Path(__file__).parent / "data" / "settings_describe.json"
INSTALLED = ("torch", "diffusers", "transformers")  # versions of this machine: compared to what is installed
CASES: dict[str, dict[str, object]] = {
    "defaults": {},
    "simulate": {"method": "simulate"},
    "simulate hybrid percentile": {"method": "simulate", "sim_mode": "hybrid", "margin": 6.0, "rule": "percentile",
                                   "percentile": 99.5, "samples": 16, "seed": 3},
    "forward": {"method": "forward"},
    "forward set": {"method": "forward", "forward_margin": 2.5, "forward_batch": 8, "forward_tokens": 64,
                    "forward_text_tokens": 32, "forward_threads": 1, "forward_micro_batch": 2,
                    "forward_conditioning": "fp8", "assume_input_rms": 1.5, "device": "cuda"},
    "auto no spool": {"method": "auto", "spool": False, "sim_mode": "hybrid"},
    "heuristic": {"method": "heuristic", "factor": 0.25, "rule": "percentile"},
    "stats": {"method": "stats", "stats": "/tmp/x/run.stats.json"},
    "stats map fallback mse": {"method": "stats", "stats": "s.json", "map": "d/names.txt", "fallback": "simulate",
                               "rule": "mse", "stats_margin": 1.5},
    "stats percentile": {"method": "stats", "stats": "s.json", "rule": "percentile"},
}


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"


def described() -> dict[str, dict[str, object]]:
    out = {}
    for case, kwargs in CASES.items():
        d = CalibrationSettings(**kwargs).describe()
        out[case] = {k: "<installed>" if k in INSTALLED and v == _installed(k) else v for k, v in d.items()}
    return out


def test_every_methods_recorded_settings_are_unchanged() -> None:
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    now = described()
    for case in CASES:
        # the key order is part of the bytes written (the metadata is JSON in the output's header)
        assert list(now[case].items()) == list(expected[case].items()), case


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    SNAPSHOT.write_text(json.dumps(described(), indent=1) + "\n", encoding="utf-8")

"""Write fp8stream/families/diffusers_renames.json: each family's diffusers -> checkpoint layer
renames, derived from its own converter (fp8stream.forward.mapping.family_renames). Run it after a
family's model code or inventory changes, or diffusers' converters do; tests/test_renames.py says
when it is due. Usage: python scripts/derive_renames.py"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fp8stream.families import FAMILIES  # noqa: E402
from fp8stream.families.renames import RENAMES_FILE  # noqa: E402
from fp8stream.forward.mapping import family_renames  # noqa: E402


def derived_renames() -> dict[str, dict[str, str]]:
    """Every family whose converter renames at least one module (identities kept: they strip a
    stats name's own prefix), in registry order."""
    out = {}
    for family in FAMILIES:
        renames = family_renames(family)
        if any(module != layer for module, layer in renames.items()):
            out[family.name] = renames
    return out


if __name__ == "__main__":
    RENAMES_FILE.write_text(json.dumps(derived_renames(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {RENAMES_FILE}")

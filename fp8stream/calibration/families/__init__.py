"""One module per model family: `sources(name, has)` and `VEC_TERMS` (graph.py builds on them)."""

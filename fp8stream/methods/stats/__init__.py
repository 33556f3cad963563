"""`--method stats`: scales from real data recorded by `fp8stream.record` (recorder.py)."""

"""The calibration methods: where each layer's activation range comes from.

interface.py says what a method is and makes the chosen one; registry.py lists the methods, each
with its settings (<name>_settings.py beside its package, torch-free: --help reads them), which
settings.py gathers into CalibrationSettings. One package per method: forward/ (the default's
synthetic forward pass), auto/ (forward where it runs, else simulate), simulate/ (the bound from
the weights), stats/ (recorded real data, fp8stream.record), heuristic/. What several methods
share (FP8 maths, the margin, the rules) is in fp8stream/scales/.
"""

"""`--method heuristic`: weight_scale x a factor, for comparison."""

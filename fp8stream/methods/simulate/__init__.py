"""`--method simulate`: each layer's input bound from the weights that produce it (no data)."""

"""How checkpoint tensors are named: the model prefixes a file may carry (prefixes.py) and the
suffixes of an FP8 layer's tensors (suffixes.py). Plain strings, nothing imported from the package."""

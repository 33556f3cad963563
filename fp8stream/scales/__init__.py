"""What the methods share: FP8 maths, a layer's scale estimate and its warnings, the margin rule, the scale rules."""

"""`--method auto`, the default: the forward pass where it can run, else simulate."""

"""DriftCheck: is the new data still what the served model knows? Checked before training."""

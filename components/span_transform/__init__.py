"""TFX's Transform, whose transformed Examples keep the span of the Examples they came from."""

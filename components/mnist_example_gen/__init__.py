"""Custom ExampleGen for MNIST's canonical files."""

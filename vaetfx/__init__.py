"""vaetfx: a TFX pipeline that trains a convolutional VAE on MNIST and serves it.

The package's sub-packages live in the repository's top-level folders
(`pipeline/`, `components/`, `models/`, `serving/`); setup.py maps them here.
"""
__version__ = '0.1.0'

"""The names of the zoo presets; `ZooConfig.preset(name)` (grid.py) builds them.

"digits" is the default (the 360-model digits zoo the service builds on first start),
"digits-quick" its 60-model stand-in (one seed per grid cell, built in seconds: the zoo of the
service's quick first default), "tiny" a 12-model digits zoo built in seconds (tests, demos,
ZOOSCOPE_DEFAULT_PRESET=tiny), "mnist5k-cnn-s" 96 CNN-s models (the public zoos' architecture)
on real MNIST images (the mnist5k data set), "mnist5k-cnn-s-kaiming" 96 CNN-s models that all
start from Kaiming inits (a zoo of trained networks, for reconstruction at a compressing
latent), "mnist5k-cnn-s-shared-init" the same grid from one init draw per scheme (models that
differ by what they learnt, not by their init), "tiny-cnn-s" 12 of them for 2 epochs (tests),
"paper" the paper's 1,200 CNN3 models (a GPU job). The names live apart from grid.py so the CLI
and the service can list and check them without importing torch.
"""

from __future__ import annotations

ZOO_PRESETS = (
    "digits",
    "digits-quick",
    "tiny",
    "mnist5k-cnn-s",
    "mnist5k-cnn-s-kaiming",
    "mnist5k-cnn-s-shared-init",
    "tiny-cnn-s",
    "paper",
)
DEFAULT_ZOO_PRESET = "digits"
# A zoo preset -> the smaller zoo of the same architecture and data set whose autoencoder the
# embedded service makes its default first, while the full one is built (worker/bootstrap.py).
QUICK_ZOO_PRESETS = {"digits": "digits-quick"}

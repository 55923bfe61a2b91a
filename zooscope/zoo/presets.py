"""The names of the zoo presets; `ZooConfig.preset(name)` (grid.py) builds them.

"digits" is the default (the 360-model digits zoo the service builds on first start), "tiny" a
12-model digits zoo built in seconds (tests, demos, ZOOSCOPE_DEFAULT_PRESET=tiny),
"mnist5k-cnn-s" 96 CNN-s models (the public zoos' architecture) on real MNIST images (the
mnist5k data set), "paper" the paper's 1,200 CNN3 models (a GPU job). The names live apart
from grid.py so the CLI and the service can list and check them without importing torch.
"""

from __future__ import annotations

ZOO_PRESETS = ("digits", "tiny", "mnist5k-cnn-s", "paper")
DEFAULT_ZOO_PRESET = "digits"

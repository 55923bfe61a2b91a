"""zooscope: model zoos and a behaviour-aware weight-space autoencoder.

The library knows nothing of the web: it is usable alone, from a notebook or the CLI.
"""

__version__ = "0.1.0"

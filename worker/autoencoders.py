"""Trained autoencoders, loaded once per worker process and kept by id (least recently used out).

Loading an artefact (weights to the device, layouts) costs far more than a small reconstruction,
so a worker keeps the last few it used. Each Celery pool process has its own cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


def default_device() -> str:
    """The GPU when this process sees one (one worker per GPU, via CUDA_VISIBLE_DEVICES), else CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_trained_autoencoder(path: str, device: str) -> Any:
    from zooscope.autoencoder.artefact import TrainedAutoencoder

    return TrainedAutoencoder.load(path, device)


class AutoencoderCache:
    """An LRU map from autoencoder id to a loaded model."""

    def __init__(self, capacity: int, loader: Callable[[str, str], Any] = load_trained_autoencoder) -> None:
        if capacity < 1:
            raise ValueError("the autoencoder cache needs room for at least one model")
        self.capacity = capacity
        self._loader = loader
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times an artefact was read from disk (tests and logs)

    def get(self, key: Any, path: str, device: str | None = None) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            model = self._loader(path, device or default_device())
            self.loads += 1
            self._items[key] = model
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return model

    def __len__(self) -> int:
        return len(self._items)

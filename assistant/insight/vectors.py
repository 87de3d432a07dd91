"""Vectors of the product's own encoder for the insight pages, with the recent ones kept.

The same questions come back on every view of the gaps page, and the same passages are cited
by many answers: their vectors are remembered (least recently used first out) rather than
encoded again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np


class VectorCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of `texts`, one row each, encoding only those not remembered."""
        from ingestion.passage_vectors import dense

        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        encoded = dict(zip(missing, dense().encode(missing), strict=True)) if missing else {}
        with self._lock:
            rows = []
            for text in texts:
                vector = encoded.get(text)
                if vector is None:
                    vector = self._vectors[text]
                    self._vectors.move_to_end(text)
                else:
                    self._vectors[text] = vector
                rows.append(vector)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return np.stack(rows)

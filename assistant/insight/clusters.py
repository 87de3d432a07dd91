"""Average-linkage agglomerative clustering of unit vectors, with a similarity threshold.

Two clusters merge while the mean cosine between their members is at least the threshold,
the closest pair first; the update is Lance-Williams', so each merge costs one row of the
matrix. For the few hundred questions the gaps page groups this takes milliseconds.
"""

from __future__ import annotations

import numpy as np


def average_linkage(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Groups of row indices of `vectors` (unit length), largest first, each in row order."""
    count = len(vectors)
    if count == 0:
        return []
    similarity = np.asarray(vectors @ vectors.T, dtype=np.float64)
    np.fill_diagonal(similarity, -np.inf)
    sizes = np.ones(count)
    members: dict[int, list[int]] = {index: [index] for index in range(count)}
    while len(members) > 1:
        flat = int(np.argmax(similarity))
        a, b = divmod(flat, count)
        if similarity[a, b] < threshold:
            break
        if b < a:
            a, b = b, a
        # The mean similarity of the merged cluster to every other cluster.
        merged = (sizes[a] * similarity[a] + sizes[b] * similarity[b]) / (sizes[a] + sizes[b])
        similarity[a, :] = merged
        similarity[:, a] = merged
        similarity[a, a] = -np.inf
        similarity[b, :] = -np.inf
        similarity[:, b] = -np.inf
        sizes[a] += sizes[b]
        members[a] = sorted(members[a] + members.pop(b))
    groups = [members[index] for index in sorted(members)]
    return sorted(groups, key=lambda group: (-len(group), group[0]))

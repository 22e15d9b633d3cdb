"""The two rules every blended score follows, shared by ranked answers and segues.

``Y = w1 * norm(CB) + w2 * norm(CF)``, with ``norm(x) = x / max(x)`` (the floor fixed at 0, the
lowest either similarity can take) and the CF weight shrunk by the evidence behind it.
"""

from __future__ import annotations

import numpy as np


def norm(x: np.ndarray) -> np.ndarray:
    """``x / max(x)`` (all zeros when nothing is positive)."""
    top = float(x.max()) if x.size else 0.0
    return x / top if top > 0 else np.zeros_like(x)


def evidence_factor(evidence: np.ndarray, shrink: float) -> np.ndarray:
    """``n / (n + shrink)`` per query (float64, same shape as ``evidence``): the share of the CF
    weight kept when ``n`` listeners (or history songs) back it; 0 without any."""
    n = np.asarray(evidence, np.float64)
    return np.where(n > 0, n / np.maximum(n + shrink, 1e-12), 0.0)

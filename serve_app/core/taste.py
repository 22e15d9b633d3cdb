"""A listener's taste as a low-rank model over the most-played songs (PureSVD), for their own lists.

The item-item walk (``collaborative.py``) scores each candidate from the seeds' nearest
neighbours alone; a listener with 40 songs in their history says more than 40 separate seeds:
which songs they play *together*. Projecting that history onto the top ``r`` directions of the
songs' co-listening matrix and back scores every modelled song at once from all of it.
Built offline by ``jobs/indexing.py: taste_factors``; the CF side blends it into a listener's
scores (``CollabScorer.for_listener``), never into song or session lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Taste:
    """Scores ``((x * scale) @ V) @ V.T`` over ``m`` modelled songs, ``x`` the listener's
    0/1 history.

    Attributes:
        tracks: ``(m,)`` int64, the modelled songs (the most played).
        left: ``(m, r)`` float32, ``scale[:, None] * V`` (a song's pull on the taste vector).
        right: ``(m, r)`` float32, ``V`` (a song's loading on each taste direction).
        n_tracks: the catalog's size (the length of :meth:`scores`).
    """

    tracks: np.ndarray
    left: np.ndarray
    right: np.ndarray
    n_tracks: int

    def __post_init__(self) -> None:
        m = self.tracks.shape[0]
        if self.left.shape != self.right.shape or self.left.shape[0] != m:
            raise ValueError(f"taste factors: left {self.left.shape} and right {self.right.shape} for {m} tracks")
        if m and (self.tracks.min() < 0 or self.tracks.max() >= self.n_tracks):
            raise ValueError(f"taste factors: tracks outside the catalog of {self.n_tracks}")
        self._row = np.full(self.n_tracks, -1, np.int64)
        self._row[self.tracks] = np.arange(m)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_tracks: int) -> Taste:
        return cls(arrays["tracks"].astype(np.int64), arrays["left"], arrays["right"], n_tracks)

    def arrays(self) -> dict[str, np.ndarray]:
        """What a bundle stores (``collab/taste.npz``)."""
        return {"tracks": self.tracks.astype(np.int32), "left": self.left, "right": self.right}

    def scores(self, history: np.ndarray) -> np.ndarray:
        """``(n_tracks,)`` float32: each modelled song's fit with the int64 ``history`` (0
        for the history's own songs, unmodelled songs and negative fits)."""
        rows = self._row[np.asarray(history, np.int64)]
        rows = rows[rows >= 0]
        out = np.zeros(self.n_tracks, np.float32)
        if rows.size:
            out[self.tracks] = self.right @ self.left[rows].sum(axis=0)
            out[history] = 0.0
        return out.clip(min=0.0)

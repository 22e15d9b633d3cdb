"""Segues: a playlist that travels from one song to another in steps a listener accepts
(docs/RECOMMENDER.md, "Segues").

A beam search over the content and collaborative neighbour graphs. Each position ``t`` of a
path of ``L`` songs has a target on the straight line between the two songs' content vectors
(``z_t = (1 - t/(L-1)) v_from + t/(L-1) v_to``); a candidate for position ``t`` is a neighbour
(either graph) of the song before it, or one of the few catalog songs nearest that target.
A candidate is kept only if it is not in the path yet, passes the filters, does not make a run
of more than ``max_run`` songs by one artist, and is closer to ``to`` than the song before it
(progress). Each beam path scores the sum of its step similarities plus ``pull`` times each
song's closeness to its target; the final step into ``to`` counts like any other.

A step's similarity is the blended score the next song would get as a recommendation for the
previous one, divided by the weights' sum: ``(w1 * cb / max_cb + w2' * cf / max_cf) / (w1 + w2')``
in [0, 1], where the maxima are the previous song's best neighbours on each side and ``w2'`` is
the CF weight shrunk by that song's listeners (``serve_app.core.blend``). 1.0 means "its best
recommendation on both sides".

Without ``to`` (a continuation) the same search runs without progress, and the target is the
first song itself: each next song close to the one before it, the whole list near the start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from serve_app.core.blend import evidence_factor
from serve_app.core.neighbors import row_entries, top_indices

UTILITY_FLOOR = 0.05


@dataclass(frozen=True)
class Path:
    """A found path. ``tracks`` (int64, ``(L,)``) starts at the first song (and ends at the
    target for a segue); per step into ``tracks[i + 1]``: ``similarity``, ``cb`` (content
    cosine), ``cf`` (collaborative similarity), all float ``(L-1,)``; ``toward`` ``(L,)`` the
    content cosine of each song with the target (None for a continuation). ``complete`` is
    False when no path of this length kept every rule; ``reason`` says what the path is."""

    tracks: np.ndarray
    similarity: np.ndarray
    cb: np.ndarray
    cf: np.ndarray
    toward: np.ndarray | None
    complete: bool
    reason: str


@dataclass(frozen=True)
class PathConfig:
    """The search's constants (chosen on the demo data and HetRec: ``jobs.evaluate``, docs/QUALITY.md)."""

    beam: int = 12
    pull: float = 0.5
    line_candidates: int = 12  # catalog songs nearest each target added to the graph neighbours
    corridor: int = 300  # songs nearest each end (and their midpoint) the line targets are looked for among
    shortlist: int = 8  # candidates measured exactly per beam path, of those ranked on the graphs' values


@dataclass
class PathFinder:
    """Segues and continuations over one bundle.

    Attributes:
        vectors: ``(n, f)`` float32 CSR, L2-normalised content vectors.
        content_nn: ``(n, n)`` CSR content neighbours (cosine).
        cf_nn: ``(n, n)`` CSR collaborative neighbours.
        artists: ``(n,)`` int artist code per track.
        listeners: ``(n,)`` listeners per track (the evidence behind a song's CF similarities).
        evidence_shrink: listeners at which the CF weight is halved.
    """

    vectors: sp.csr_matrix
    content_nn: sp.csr_matrix
    cf_nn: sp.csr_matrix
    artists: np.ndarray
    listeners: np.ndarray
    evidence_shrink: float = 5.0
    config: PathConfig = PathConfig()

    def __post_init__(self) -> None:
        self.n = self.vectors.shape[0]
        self._cb_max = _row_max(self.content_nn)
        self._cf_max = _row_max(self.cf_nn)
        self._factor = evidence_factor(self.listeners, self.evidence_shrink)

    # ------------------------------------------------------------------ similarity of steps
    def _cosines(self, track: int) -> np.ndarray:
        """``(n,)`` float64 content cosine of every song with ``track``."""
        return (self.vectors @ self.vectors[track].toarray().ravel()).astype(np.float64)

    def _cb(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Content cosine of each pair (``prev[i]``, ``nxt[i]``), clipped at 0."""
        if prev.size == 0:
            return np.zeros(0)
        firsts, inverse = np.unique(prev, return_inverse=True)
        dense = self.vectors[firsts].toarray()
        pos, owner = row_entries(self.vectors, nxt)
        dots = self.vectors.data[pos] * dense[inverse[owner], self.vectors.indices[pos]]
        return np.bincount(owner, weights=dots, minlength=nxt.size).clip(min=0)

    def _cf(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Collaborative similarity of each pair (0 when ``nxt`` is not among ``prev``'s neighbours)."""
        if prev.size == 0:
            return np.zeros(0)
        return np.asarray(self.cf_nn[prev, nxt]).ravel().astype(np.float64)

    def parts(
        self, prev: np.ndarray, cb: np.ndarray, cf: np.ndarray, w1: float, w2: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The content and collaborative parts of steps from ``prev`` with raw ``cb`` and ``cf``:
        ``(w1 * cb / max_cb, w2' * cf / max_cf) / (w1 + w2')``, summing to the step similarity."""
        w2s = w2 * self._factor[prev]
        w1s = np.where((w1 > 0) | (w2s > 0), w1, 1.0)  # a CF-only ask from a cold song: content
        total = np.maximum(w1s + w2s, 1e-12)
        part_cb = w1s * np.minimum(cb / self._cb_max[prev], 1.0) / total
        part_cf = w2s * np.minimum(cf / self._cf_max[prev], 1.0) / total
        return part_cb, part_cf

    def blend(self, prev: np.ndarray, cb: np.ndarray, cf: np.ndarray, w1: float, w2: float) -> np.ndarray:
        """Step similarities in [0, 1] of pairs starting at ``prev`` with raw ``cb`` and ``cf``."""
        part_cb, part_cf = self.parts(prev, cb, cf, w1, w2)
        return part_cb + part_cf

    def steps(self, tracks: np.ndarray, w1: float, w2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(similarity, cb, cf)`` of each step of a path ``tracks`` (any songs, in order)."""
        prev, nxt = tracks[:-1], tracks[1:]
        cb, cf = self._cb(prev, nxt), self._cf(prev, nxt)
        return self.blend(prev, cb, cf, w1, w2), cb, cf

    def connected(self, a: int, b: int) -> bool:
        """Whether ``b`` is among ``a``'s neighbours on either side, or ``a`` among ``b``'s."""
        return any(m[x, y] > 0 for m in (self.content_nn, self.cf_nn) for x, y in ((a, b), (b, a)))

    # ------------------------------------------------------------------ the search
    def find(
        self,
        start: int,
        length: int,
        w1: float,
        w2: float,
        end: int | None = None,
        allowed: np.ndarray | None = None,
        max_run: int = 2,
    ) -> Path:
        """The best path of ``length`` songs from ``start`` (to ``end`` for a segue; a continuation
        without), its intermediate songs among ``allowed`` (bool ``(n,)``, None: any)."""
        cfg = self.config
        s_start = self._cosines(start)
        s_end = self._cosines(end) if end is not None else None
        ok = np.ones(self.n, bool) if allowed is None else allowed.copy()
        ok[start] = False
        if end is not None:
            ok[end] = False
        # the beam: paths (B, t), scores, the artist run at each path's end, and whether it kept progress
        paths = np.array([[start]], np.int64)
        score = np.zeros(1)
        run = np.ones(1, np.int64)
        kept = np.ones(1, bool)
        middle = length - 1 if end is not None else length
        corridor = self._corridor(s_start, s_end, ok)
        two_hops = self._two_hops(end, s_end, ok, w1, w2) if end is not None and length > 3 else None
        for t in range(1, middle):
            target = self._target(s_start, s_end, t, length)
            cand, owner, known_cb, known_cf = self._candidates(paths[:, -1], target, ok, corridor)
            prev = paths[owner, -1]
            same = self.artists[cand] == self.artists[prev]
            keep = ~(paths[owner] == cand[:, None]).any(axis=1) & (~same | (run[owner] < max_run))
            progress = s_end[cand] > s_end[prev] if s_end is not None else np.ones(cand.size, bool)
            if (keep & progress).any():
                keep &= progress
            # rank on what the graphs already know (a lower bound), then measure the best exactly;
            # the last song before ``end`` is also scored on the step into it
            hop = np.zeros(cand.size)
            if end is not None and t == middle - 1:
                hop = _utility(
                    self.blend(cand, s_end[cand].clip(min=0), self._cf(cand, np.full(cand.size, end)), w1, w2)
                )
            elif end is not None and t == middle - 2:
                hop = two_hops[cand]
            rough = (
                score[owner] + _utility(self.blend(prev, known_cb, known_cf, w1, w2)) + cfg.pull * target[cand] + hop
            )
            rough = np.where(keep, rough, -np.inf)
            pick = top_indices(rough, cfg.beam * cfg.shortlist)
            pick = pick[keep[pick]]
            if pick.size == 0:
                break
            cand, owner, prev, same, progress, hop = (x[pick] for x in (cand, owner, prev, same, progress, hop))
            sim = self.blend(prev, self._cb(prev, cand), self._cf(prev, cand), w1, w2)
            total = score[owner] + _utility(sim) + cfg.pull * target[cand] + hop
            order = np.lexsort((cand, -total))
            first = np.ones(order.size, bool)  # the best way into each song only
            ranked = cand[order]
            by_song = np.argsort(ranked, kind="stable")
            first[by_song[1:][ranked[by_song[1:]] == ranked[by_song[:-1]]]] = False
            best = order[first][: cfg.beam]
            paths = np.hstack([paths[owner[best]], cand[best, None]])
            score, kept = total[best], kept[owner[best]] & progress[best]
            run = np.where(same[best], run[owner[best]] + 1, 1)
        return self._finish(paths, score, run, kept, s_end, end, length, w1, w2, max_run)

    def _target(self, s_start: np.ndarray, s_end: np.ndarray | None, t: int, length: int) -> np.ndarray:
        """``(n,)`` closeness of every song to position ``t``'s target: the cosine with the point
        ``t/(L-1)`` of the way along the line between the two songs (the start for a continuation)."""
        if s_end is None:
            return s_start
        a = t / (length - 1)
        cos_ends = float(s_end[int(np.argmax(s_start))])  # s_start peaks at the start song itself
        return ((1 - a) * s_start + a * s_end) / np.sqrt(max((1 - a) ** 2 + a**2 + 2 * a * (1 - a) * cos_ends, 1e-12))

    def _two_hops(self, end: int, s_end: np.ndarray, ok: np.ndarray, w1: float, w2: float) -> np.ndarray:
        """``(n,)`` estimated utility of reaching ``end`` in two steps from each song: the best over
        ``end``'s neighbours ``x`` of the step into ``x`` (estimated from ``x``'s own lists) plus the
        step from ``x`` into ``end``; songs with no such ``x`` get two steps' worth of nothing."""
        out = np.full(self.n, 2 * float(_utility(np.zeros(1))[0]))
        near = np.unique(
            np.concatenate([m.indices[m.indptr[end] : m.indptr[end + 1]] for m in (self.content_nn, self.cf_nn)])
        )
        near = near[ok[near]]
        into_end = _utility(self.blend(near, s_end[near].clip(min=0), self._cf(near, np.full(near.size, end)), w1, w2))
        for m, is_cb in ((self.content_nn, True), (self.cf_nn, False)):
            pos, owner = row_entries(m, near)
            vals = m.data[pos].astype(np.float64)
            c = m.indices[pos]
            zero = np.zeros(vals.size)
            step = self.blend(c, vals if is_cb else zero, zero if is_cb else vals, w1, w2)
            np.maximum.at(out, c, _utility(step) + into_end[owner])
        return out

    def _corridor(self, s_start: np.ndarray, s_end: np.ndarray | None, ok: np.ndarray) -> np.ndarray:
        """The allowed songs the line targets are looked for among (int64): those nearest either end
        or their midpoint, so that each position does not scan the whole catalog."""
        size = self.config.corridor
        ends = [s_start] if s_end is None else [s_start, s_end, s_start + s_end]
        found = [top_indices(np.where(ok, s, -np.inf), size) for s in ends]
        corridor = np.unique(np.concatenate(found))
        return corridor[ok[corridor]]

    def _candidates(
        self, last: np.ndarray, target: np.ndarray, ok: np.ndarray, corridor: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(candidate tracks, beam row, cb, cf)``: each beam end's neighbours on both sides (with
        the similarity its list holds, 0 for the other side) and the ``corridor`` songs nearest the
        target (0 for both), among ``ok`` songs; a song may come more than once per beam row."""
        cand: list[np.ndarray] = []
        owner: list[np.ndarray] = []
        cb: list[np.ndarray] = []
        cf: list[np.ndarray] = []
        for m, side in ((self.content_nn, cb), (self.cf_nn, cf)):
            pos, own = row_entries(m, last)
            cand.append(m.indices[pos].astype(np.int64))
            owner.append(own)
            side.append(m.data[pos].astype(np.float64))
            (cf if side is cb else cb).append(np.zeros(pos.size))
        line = corridor[top_indices(target[corridor], self.config.line_candidates)]
        cand.append(np.tile(line, last.size))
        owner.append(np.repeat(np.arange(last.size), line.size))
        cb.append(np.zeros(cand[-1].size))
        cf.append(np.zeros(cand[-1].size))
        c, o, b, f = (np.concatenate(x) for x in (cand, owner, cb, cf))
        keep = ok[c]
        return c[keep], o[keep], b[keep], f[keep]

    def _finish(
        self,
        paths: np.ndarray,
        score: np.ndarray,
        run: np.ndarray,
        kept: np.ndarray,
        s_end: np.ndarray | None,
        end: int | None,
        length: int,
        w1: float,
        w2: float,
        max_run: int,
    ) -> Path:
        """The best beam path (with the final step into ``end``), and what it is."""
        short = paths.shape[1] < (length - 1 if end is not None else length)
        if end is not None:
            last = paths[:, -1]
            if short or length == 2:  # the search did not score the step into ``end``
                cb, cf = self._cb(last, np.full(last.size, end)), self._cf(last, np.full(last.size, end))
                score = score + _utility(self.blend(last, cb, cf, w1, w2))
            too_long = (self.artists[last] == self.artists[end]) & (run >= max_run)
            score = np.where(too_long, score - 10.0, score)
            paths = np.hstack([paths, np.full((len(paths), 1), end)])
        best = int(np.argmax(score))
        tracks = paths[best]
        similarity, cb, cf = self.steps(tracks, w1, w2)
        toward = s_end[tracks] if s_end is not None else None
        if short:
            complete, reason = False, f"only {len(tracks)} songs could be chained without repeats within the filters"
        elif end is None:
            complete, reason = True, "each song close to the one before it"
        elif not kept[best]:
            complete, reason = False, "no path of this length got closer to the last song at every step"
        elif not self.connected(int(tracks[-2]), end):
            complete, reason = (
                False,
                (
                    f"no path of {length} songs reaches the last song smoothly: the final step is a jump "
                    f"(similarity {similarity[-1]:.2f}); a longer segue may find one"
                ),
            )
        else:
            complete, reason = True, "each song close to the one before it and closer to the last song"
        return Path(tracks, similarity, cb, cf, toward, complete, reason)


def progress_share(toward: np.ndarray) -> float:
    """The share of a path's steps that end closer to the last song (``toward``: ``(L,)`` each
    song's content cosine with it)."""
    return float(np.mean(np.diff(toward) > 0)) if toward.size > 1 else 1.0


def _utility(similarity: np.ndarray) -> np.ndarray:
    """What a step adds to a path's score: concave, so one weak step costs more than a strong one earns."""
    return np.log(similarity + UTILITY_FLOOR)


def _row_max(m: sp.csr_matrix) -> np.ndarray:
    """``(n,)`` float64 largest entry per row (1 for an empty row, so ratios stay defined)."""
    out = np.ones(m.shape[0])
    lengths = np.diff(m.indptr)
    rows = np.flatnonzero(lengths)
    out[rows] = np.maximum.reduceat(m.data, m.indptr[rows]).clip(min=1e-12)
    return out

"""Segues: a playlist that travels from one song to another in steps a listener accepts
(docs/RECOMMENDER.md, "Segues").

A beam search over the content and collaborative neighbour graphs. Each position ``t`` of a
path of ``L`` songs has a target on the straight line between the two songs' content vectors
(``z_t = (1 - t/(L-1)) v_from + t/(L-1) v_to``); a candidate for position ``t`` is a neighbour
(either graph) of the song before it, or one of the few catalog songs nearest that target.
A candidate is kept only if it is not in the path yet, passes the filters, does not make a run
of more than ``max_run`` songs by one artist, and is closer to ``to`` than the song before it
(progress). Each beam path scores the sum of its steps' utilities (steeply concave in their
similarity) plus ``pull`` times each song's closeness to its target. A segue grows two halves,
one from ``from`` and one back from ``to``, and bridges them with the song for the middle
position that makes the best whole path, now also judged by its weakest step
(``bottleneck``): the steps into ``to`` and out of ``from`` count like any other.

A step's similarity is the blended score one of its two songs would give the other as a
recommendation, the better of the two directions, divided by the weights' sum:
``(w1 * cb / max_cb + w2' * cf / max_cf) / (w1 + w2')`` in [0, 1], where the maxima are the
recommending song's best neighbours on each side and ``w2'`` is the CF weight shrunk by that
song's listeners (``serve_app.core.blend``). 1.0 means "its best recommendation on both sides".

Without ``to`` (a continuation) the same search runs without progress, and the target is the
first song itself: each next song close to the one before it, the whole list near the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, reduce

import numpy as np
import scipy.sparse as sp

from serve_app.core.blend import evidence_factor
from serve_app.core.neighbors import best_first, row_entries, row_max, top_indices

UTILITY_FLOOR = 0.1
Spaces = dict[str, tuple[float, np.ndarray]]  # space name -> (weight, (n,) cosines with a song)
# a step a listener accepts: about a typical neighbour-list entry (the median step into a song's
# CF neighbours, the lower quartile into its content neighbours, on the demo data and at 30K songs)
MIN_STEP = 0.2
JOIN_PENALTY = 100.0  # a bridged path that repeats a song or an artist too often, or turns back


@dataclass(frozen=True)
class Path:
    """A found path. ``tracks`` (int64, ``(L,)``) starts at the first song (and ends at the
    target for a segue); per step into ``tracks[i + 1]``: ``similarity`` (``part_cb +
    part_cf``), ``cb`` (content cosine), ``cf`` (collaborative similarity), all float
    ``(L-1,)``; ``toward`` ``(L,)`` each song's closeness to the target (None for a continuation). ``complete`` is
    False when no path of this length kept every rule (every step at least ``MIN_STEP``, every
    step closer to the target); ``reason`` says what the path is."""

    tracks: np.ndarray
    similarity: np.ndarray
    cb: np.ndarray
    cf: np.ndarray
    part_cb: np.ndarray
    part_cf: np.ndarray
    toward: np.ndarray | None
    complete: bool
    reason: str


@dataclass(frozen=True)
class PathConfig:
    """The search's constants (chosen on the demo data and HetRec: ``jobs.evaluate``, docs/QUALITY.md)."""

    beam: int = 12
    pull: float = 1.5
    fanout: int = 60  # a beam end's first neighbours on each side considered
    line_candidates: int = 12  # catalog songs nearest each target added to the graph neighbours
    corridor: int = 300  # songs nearest each end (and their midpoint) the line targets are looked for among
    shortlist: int = 8  # candidates measured exactly per beam path, of those ranked on the graphs' values
    join_beam: int = 40  # partial paths each half keeps where the two halves meet
    bridge_fanout: int = 40  # the first neighbours on each side of every half's end the bridge is looked for among
    bridge: int = 40  # songs for the middle position measured against every partial path of both halves
    bottleneck: float = 100.0  # weight of a whole path's weakest step when the halves are bridged
    beam_bottleneck: float = 3.0  # weight of a partial path's weakest step when a beam keeps its best
    mend_fanout: int = 60  # the first neighbours on each side a song mending the weakest step is looked for among


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
        factors: ``(n, d)`` float32 unit rows, each song's place by its listeners (zero for a
            song nobody played; None: content alone tells how close a song is to an end).
    """

    vectors: sp.csr_matrix
    content_nn: sp.csr_matrix
    cf_nn: sp.csr_matrix
    artists: np.ndarray
    listeners: np.ndarray
    evidence_shrink: float = 5.0
    factors: np.ndarray | None = None
    config: PathConfig = PathConfig()

    def __post_init__(self) -> None:
        self.n = self.vectors.shape[0]
        self._cb_max = row_max(self.content_nn)
        self._cf_max = row_max(self.cf_nn)
        self._factor = evidence_factor(self.listeners, self.evidence_shrink)
        # CF pair lookups: the list's entries keyed ``row * n + column`` in order (a binary
        # search per pair); ~24 MB per 10K songs
        cf_sorted = self.cf_nn if self.cf_nn.has_sorted_indices else self.cf_nn.sorted_indices()
        rows = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(cf_sorted.indptr))
        self._cf_keys, self._cf_values = rows * self.n + cf_sorted.indices, cf_sorted.data
        # candidates: the first entries of each list, its best (indexing writes them best first)
        self._lists = (best_first(self.content_nn), best_first(self.cf_nn))

    # ------------------------------------------------------------------ similarity of steps
    def _spaces(self, pivot: int, w1: float, w2: float) -> Spaces:
        """``{space: (weight, (n,) cosines with pivot)}`` for each space ``pivot`` has a place in:
        ``content`` (it has tags or features) weighted ``w1``, ``listeners`` (someone played it)
        weighted ``w2``."""
        spaces: Spaces = {}
        if self.vectors.indptr[pivot + 1] > self.vectors.indptr[pivot]:
            spaces["content"] = (w1, (self.vectors @ self.vectors[pivot].toarray().ravel()).astype(np.float64))
        if self.factors is not None and self.factors[pivot].any():
            # einsum, not BLAS: a threaded BLAS call this small waits ~20 ms on busy cores
            spaces["listeners"] = (w2, np.einsum("ij,j->i", self.factors, self.factors[pivot]).astype(np.float64))
        if not spaces:  # a song with neither: every song as far as any other
            spaces["content"] = (1.0, np.zeros(self.n))
        if sum(w for w, _ in spaces.values()) <= 0:
            spaces = {name: (1.0, x) for name, (_, x) in spaces.items()}
        return spaces

    def closeness(self, pivot: int, w1: float, w2: float) -> np.ndarray:
        """``(n,)`` float64 how close every song is to ``pivot``: the weighted mean of its content
        cosine and its listener-space cosine with it, over the spaces ``pivot`` has a place in.
        A segue's progress is measured by it (``toward``)."""
        return _mean(self._spaces(pivot, w1, w2))

    def _cb(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Content cosine of each pair (``prev[i]``, ``nxt[i]``), clipped at 0."""
        firsts, row = np.unique(prev, return_inverse=True)
        dense = self._rows(firsts)
        pos, owner = row_entries(self.vectors, nxt)
        dots = dense[row[owner], self.vectors.indices[pos]] * self.vectors.data[pos]
        return np.bincount(owner, weights=dots, minlength=nxt.size).clip(min=0)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), f)`` float64 dense content rows, gathered from the CSR arrays directly
        (scipy's row indexing costs more than the products at these sizes)."""
        dense = np.zeros((rows.size, self.vectors.shape[1]))
        pos, owner = row_entries(self.vectors, rows)
        dense[owner, self.vectors.indices[pos]] = self.vectors.data[pos]
        return dense

    def _dots(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``(len(rows), len(cols))`` float64 content dot products (no BLAS: see ``_spaces``)."""
        dense = self._rows(rows)
        pos, _ = row_entries(self.vectors, cols)
        running = np.zeros((rows.size, pos.size + 1))  # each column's products summed by differences
        np.cumsum(dense[:, self.vectors.indices[pos]] * self.vectors.data[pos], axis=1, out=running[:, 1:])
        bounds = np.concatenate([[0], np.cumsum(np.diff(self.vectors.indptr)[cols])])
        return running[:, bounds[1:]] - running[:, bounds[:-1]]

    def _cf(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Collaborative similarity of each pair as ``prev``'s list holds it (0 when it does not)."""
        keys = np.asarray(prev, np.int64) * self.n + nxt
        order = np.argsort(keys)  # sorted needles: each search starts where the last one ended
        at = np.empty(keys.size, np.int64)
        at[order] = np.minimum(np.searchsorted(self._cf_keys, keys[order]), len(self._cf_keys) - 1)
        return np.where(self._cf_keys[at] == keys, self._cf_values[at], 0.0).astype(np.float64)

    def parts(
        self, prev: np.ndarray, cb: np.ndarray, cf: np.ndarray, w1: float, w2: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The content and collaborative parts of ``prev`` recommending a song with raw ``cb`` and
        ``cf`` (``cf`` as ``prev``'s list holds it): ``(w1 * cb / max_cb, w2' * cf / max_cf) / (w1 + w2')``."""
        w2s = w2 * self._factor[prev]
        w1s = np.where((w1 > 0) | (w2s > 0), w1, 1.0)  # a CF-only ask from a cold song: content
        total = np.maximum(w1s + w2s, 1e-12)
        part_cb = w1s * np.minimum(cb / self._cb_max[prev], 1.0) / total
        part_cf = w2s * np.minimum(cf / self._cf_max[prev], 1.0) / total
        return part_cb, part_cf

    def blend(self, prev: np.ndarray, cb: np.ndarray, cf: np.ndarray, w1: float, w2: float) -> np.ndarray:
        """How well ``prev`` recommends a song with raw ``cb`` and ``cf``, in [0, 1]."""
        part_cb, part_cf = self.parts(prev, cb, cf, w1, w2)
        return part_cb + part_cf

    def measure(
        self, prev: np.ndarray, nxt: np.ndarray, w1: float, w2: float, cb: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(similarity, cb, cf, part_cb, part_cf)`` of steps ``prev[i] -> nxt[i]``: the better of
        the two songs recommending each other (a step is as acceptable in either direction), its
        parts, the content cosine (given as ``cb`` when known) and the collaborative similarity that
        direction's list holds."""
        cb = self._cb(prev, nxt) if cb is None else cb
        n = len(prev)
        both = np.concatenate([prev, nxt])  # each direction at once: prev recommending nxt, then back
        cf = self._cf(both, np.concatenate([nxt, prev]))
        parts_cb, parts_cf = self.parts(both, np.concatenate([cb, cb]), cf, w1, w2)
        back = parts_cb[n:] + parts_cf[n:] > parts_cb[:n] + parts_cf[:n]
        pick = np.arange(n) + n * back
        part_cb, part_cf = parts_cb[pick], parts_cf[pick]
        return part_cb + part_cf, cb, cf[pick], part_cb, part_cf

    def steps(self, tracks: np.ndarray, w1: float, w2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(similarity, cb, cf)`` of each step of a path ``tracks`` (any songs, in order)."""
        sim, cb, cf, _, _ = self.measure(tracks[:-1], tracks[1:], w1, w2)
        return sim, cb, cf

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
        without), its songs in between among ``allowed`` (bool ``(n,)``, None: any)."""
        ends = _Ends(self._spaces(start, w1, w2), None if end is None else self._spaces(end, w1, w2))
        s_end = ends.end
        ok = np.ones(self.n, bool) if allowed is None else allowed.copy()
        ok[start] = False
        if end is not None:
            ok[end] = False
        search = _Search(self, ends, ok, self._corridor(ends, ok), length, w1, w2, max_run)
        forward = _Beam.of(start)
        if end is None:
            for t in range(1, length):
                forward = search.grow(forward, t, True, last=False) or forward
            best = int(np.argmax(forward.score))
            tracks, kept = forward.paths[best], True
        elif length == 2:
            assert s_end is not None
            tracks, kept = np.array([start, end], np.int64), bool(s_end[start] < s_end[end])
        else:
            middle = length // 2  # positions before it grow from the start, those after from the end
            for t in range(1, middle):
                forward = search.grow(forward, t, True, last=t == middle - 1) or forward
            i, song, j, backward, clash, kept = search.bridge(forward, search.backward(end, middle), middle)
            if clash:  # every bridge repeated a song (or an artist run): the end's half again, around the start's
                search.ok[forward.paths[i]] = False
                forward = forward.take(i)
                i, song, j, backward, clash, kept = search.bridge(forward, search.backward(end, middle), middle)
            between = np.array([] if song is None else [song], np.int64)
            tracks = np.concatenate([forward.paths[i], between, backward.paths[j][::-1]])
            kept &= not clash
            if not clash and tracks.size >= 3:
                assert s_end is not None
                tracks = self._mend(tracks, s_end, search.ok, w1, w2, max_run)
        return self._path(tracks, kept, s_end, length, w1, w2)

    # ------------------------------------------------------------------ mending the weakest step
    def _mend(
        self, tracks: np.ndarray, s_end: np.ndarray, ok: np.ndarray, w1: float, w2: float, max_run: int
    ) -> np.ndarray:
        """``tracks`` with the song on one side of its weakest step replaced by the song from its
        two neighbours' lists that lifts the path's weakest step most, if one does and keeps every
        rule (``ok`` songs, no repeats, artist runs, each song closer to the last)."""
        cfg = self.config
        sim = self.measure(tracks[:-1], tracks[1:], w1, w2)[0]
        k = int(np.argmin(sim))
        at, songs, rest = [], [], []
        for p in (k, k + 1):  # the song before the step or the one after it; never an end
            if 1 <= p < tracks.size - 1:
                before, after = tracks[p - 1], tracks[p + 1]
                c = np.unique(
                    self._candidates(np.array([before, after]), np.zeros(0, np.int64), ok, cfg.mend_fanout)[0]
                )
                c = c[self._fits(c, tracks, p, max_run) & (s_end[c] > s_end[before]) & (s_end[c] < s_end[after])]
                at.append(np.full(c.size, p))
                songs.append(c)
                rest.append(np.full(c.size, np.delete(sim, [p - 1, p]).min(initial=1.0)))
        if not songs or not sum(c.size for c in songs):
            return tracks
        place, c, others = np.concatenate(at), np.concatenate(songs), np.concatenate(rest)
        steps = self.measure(np.concatenate([tracks[place - 1], c]), np.concatenate([c, tracks[place + 1]]), w1, w2)[0]
        low = np.minimum(np.minimum(steps[: c.size], steps[c.size :]), others)
        best = int(np.argmax(low))
        if low[best] <= sim[k]:
            return tracks
        mended = tracks.copy()
        mended[place[best]] = c[best]
        return mended

    def _fits(self, c: np.ndarray, tracks: np.ndarray, p: int, max_run: int) -> np.ndarray:
        """Which songs ``c`` may take position ``p`` of ``tracks``: not already in the path, and not
        making a run of more than ``max_run`` songs by one artist."""
        run = np.ones(c.size, np.int64)
        for direction in (-1, 1):
            same = np.ones(c.size, bool)
            for q in range(p + direction, p + direction * (max_run + 1), direction):
                if not 0 <= q < tracks.size:
                    break
                same &= self.artists[tracks[q]] == self.artists[c]
                run += same
        return ~np.isin(c, tracks) & (run <= max_run)

    def _path(
        self, tracks: np.ndarray, kept: bool, s_end: np.ndarray | None, length: int, w1: float, w2: float
    ) -> Path:
        """The found ``tracks`` measured, and what they are."""
        similarity, cb, cf, part_cb, part_cf = self.measure(tracks[:-1], tracks[1:], w1, w2)
        toward = s_end[tracks] if s_end is not None else None
        weakest = int(np.argmin(similarity))
        if len(tracks) < length:
            complete, reason = False, f"only {len(tracks)} songs could be chained without repeats within the filters"
        elif similarity[weakest] < MIN_STEP:
            complete, reason = (
                False,
                (
                    f"no path of {length} songs keeps every step close: step {weakest + 1} is a jump "
                    f"(similarity {similarity[weakest]:.2f}, below {MIN_STEP}); another length may find one"
                ),
            )
        elif s_end is None:
            complete, reason = True, "each song close to the one before it"
        elif not kept:
            assert toward is not None
            backs = np.flatnonzero(np.diff(toward) <= 0)  # the steps that do not get closer
            broken = (
                f"got closer to the last song at every step: step {backs[0] + 1} turns back "
                f"(closeness {toward[backs[0]]:.2f} -> {toward[backs[0] + 1]:.2f})"
                if backs.size
                else "kept every artist run within the limit"
            )
            complete, reason = False, f"no path of {length} songs {broken}; another length may find one"
        else:
            complete, reason = True, "each song close to the one before it and closer to the last song"
        return Path(tracks, similarity, cb, cf, part_cb, part_cf, toward, complete, reason)

    def _corridor(self, ends: _Ends, ok: np.ndarray) -> np.ndarray:
        """The allowed songs the line targets are looked for among (int64): those nearest either end
        or their midpoint, so that each position does not scan the whole catalog."""
        cut = self.n - min(self.config.corridor, self.n)  # argpartition: in no order, for a set
        near = [ends.start] if ends.end is None else [ends.start, ends.end, ends.start + ends.end]
        found = [np.argpartition(np.where(ok, s, -np.inf), cut)[cut:] for s in near]
        corridor = np.unique(np.concatenate(found))
        return corridor[ok[corridor]]

    def _candidates(
        self, last: np.ndarray, line: np.ndarray, ok: np.ndarray, fanout: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(candidate tracks, beam row, cb, cf)``: each beam end's neighbours on both sides (with
        the similarity its list holds, 0 for the other side) and the ``line`` songs, those nearest
        the position's target (0 for both), among ``ok`` songs; a song may come more than once per
        beam row. ``fanout``: the first entries of each list taken."""
        cand, owner, cb, cf = [], [], [], []
        content_nn, cf_nn = self._lists
        for m, is_cb in ((content_nn, True), (cf_nn, False), (None, False)):
            if m is None:
                c, o, v = np.tile(line, last.size), np.repeat(np.arange(last.size), line.size), np.zeros(0)
            else:
                pos, o = row_entries(m, last, fanout)
                c, v = m.indices[pos].astype(np.int64), m.data[pos].astype(np.float64)
            zero = np.zeros(c.size)
            cand.append(c)
            owner.append(o)
            cb.append(v if is_cb else zero)
            cf.append(v if m is cf_nn else zero)
        c, o, b, f = (np.concatenate(x) for x in (cand, owner, cb, cf))
        keep = ok[c]
        return c[keep], o[keep], b[keep], f[keep]


@dataclass(frozen=True)
class _Ends:
    """How close every song is to a path's first song and to its last (None for a continuation),
    per space (:meth:`PathFinder._spaces`)."""

    first: Spaces
    last: Spaces | None

    @cached_property
    def start(self) -> np.ndarray:
        return _mean(self.first)

    @cached_property
    def end(self) -> np.ndarray | None:
        return None if self.last is None else _mean(self.last)

    def target(self, t: int, length: int, songs: np.ndarray) -> np.ndarray:
        """``(len(songs),)`` closeness of ``songs`` to position ``t``'s target: in each of the last
        song's spaces the cosine with the point ``t/(L-1)`` of the way along the line between the
        two songs (the last song's own where the first has no place), weighted as the last song's
        are; for a continuation, closeness to the first song."""
        if self.last is None:
            return self.start[songs]
        a = t / (length - 1)
        lines: Spaces = {}
        for name, (w, s_end) in self.last.items():
            if name not in self.first:
                lines[name] = (w, s_end[songs])
                continue
            s_start = self.first[name][1]
            norm = np.sqrt(max((1 - a) ** 2 + a**2 + 2 * a * (1 - a) * self._cos_ends[name], 1e-12))
            lines[name] = (w, ((1 - a) * s_start[songs] + a * s_end[songs]) / norm)
        return _mean(lines)

    @cached_property
    def _cos_ends(self) -> dict[str, float]:
        """The two songs' cosine in each space both have a place in (``first`` peaks at the first song)."""
        assert self.last is not None
        return {
            name: float(s_end[int(np.argmax(self.first[name][1]))])
            for name, (_, s_end) in self.last.items()
            if name in self.first
        }


@dataclass(frozen=True)
class _Beam:
    """Partial paths grown from one end: ``paths`` ``(B, t)`` int64 in the order grown (from the
    start for a forward beam, from the end for a backward one), their ``score`` ``(B,)``, the
    artist ``run`` at the growing end, whether each ``kept`` progress so far and its weakest
    step's similarity ``low`` (1.0 before any step)."""

    paths: np.ndarray
    score: np.ndarray
    run: np.ndarray
    kept: np.ndarray
    low: np.ndarray

    @classmethod
    def of(cls, track: int) -> _Beam:
        return cls(np.array([[track]], np.int64), np.zeros(1), np.ones(1, np.int64), np.ones(1, bool), np.ones(1))

    def take(self, i: int) -> _Beam:
        """The beam of path ``i`` alone."""
        one = slice(i, i + 1)
        return _Beam(self.paths[one], self.score[one], self.run[one], self.kept[one], self.low[one])


@dataclass
class _Search:
    """One query's search state: the cosines with both ends, the allowed songs and the constants."""

    finder: PathFinder
    ends: _Ends
    ok: np.ndarray
    corridor: np.ndarray
    length: int
    w1: float
    w2: float
    max_run: int

    def line(self, t: int) -> np.ndarray:
        """The ``line_candidates`` corridor songs nearest position ``t``'s target (int64)."""
        near = self.ends.target(t, self.length, self.corridor)
        return self.corridor[top_indices(near, self.finder.config.line_candidates)]

    def grow(self, beam: _Beam, t: int, forward: bool, last: bool) -> _Beam | None:
        """The beam one song longer with songs for position ``t`` (None when no song can follow):
        before the growing end for a backward beam. ``last``: the growth before the two halves
        meet, which keeps a wider beam to join from."""
        f, cfg = self.finder, self.finder.config
        s_end = self.ends.end
        head = beam.paths[:, -1]
        cand, owner, known_cb, known_cf = f._candidates(head, self.line(t), self.ok, cfg.fanout)
        at = head[owner]
        same = f.artists[cand] == f.artists[at]
        keep = ~(beam.paths[owner] == cand[:, None]).any(axis=1) & (~same | (beam.run[owner] < self.max_run))
        progress = np.ones(cand.size, bool)
        if s_end is not None:
            progress = s_end[cand] > s_end[at] if forward else s_end[cand] < s_end[at]
        if (keep & progress).any():  # a step away from the last song only when no other is left
            keep &= progress
        if not keep.any():
            return None
        cand, owner, known_cb, known_cf, at, same, progress = (
            x[keep] for x in (cand, owner, known_cb, known_cf, at, same, progress)
        )
        target = self.ends.target(t, self.length, cand)
        # rank on what the growing end's lists hold (a lower bound), then measure the best exactly
        rough = beam.score[owner] + _utility(f.blend(at, known_cb, known_cf, self.w1, self.w2)) + cfg.pull * target
        width = cfg.join_beam if last and s_end is not None else cfg.beam
        pick = top_indices(rough, width * cfg.shortlist)
        cand, owner, at, same, progress, target = (x[pick] for x in (cand, owner, at, same, progress, target))
        src, dst = (at, cand) if forward else (cand, at)
        sim = f.measure(src, dst, self.w1, self.w2)[0]
        total = beam.score[owner] + _utility(sim) + cfg.pull * target
        low = np.minimum(beam.low[owner], sim)
        order = np.lexsort((cand, -(total + cfg.beam_bottleneck * low)))  # ranked by score and weakest step
        ranked = cand[order]
        by_song = np.argsort(ranked, kind="stable")
        first = np.ones(order.size, bool)  # the best way to each song only
        first[by_song[1:][ranked[by_song[1:]] == ranked[by_song[:-1]]]] = False
        best = order[first][:width]
        return _Beam(
            np.hstack([beam.paths[owner[best]], cand[best, None]]),
            total[best],
            np.where(same[best], beam.run[owner[best]] + 1, 1),
            beam.kept[owner[best]] & progress[best],
            low[best],
        )

    def backward(self, end: int, middle: int) -> _Beam:
        """The half of a segue grown back from ``end`` down to position ``middle + 1``."""
        beam = _Beam.of(end)
        for t in range(self.length - 2, middle, -1):
            beam = self.grow(beam, t, False, last=t == middle + 1) or beam
        return beam

    def bridge(self, forward: _Beam, backward: _Beam, t: int) -> tuple[int, int | None, int, _Beam, bool, bool]:
        """The best song for position ``t`` between a forward and a backward partial path, and the
        pair it joins: ``(i, song, j, backward, clash, kept)``. Candidates are both halves' ends'
        neighbours and the line's nearest songs; the ``bridge`` best, ranked on what the lists
        hold, are measured exactly against every end of both halves. A whole path scores its
        step utilities and pull plus ``bottleneck`` times its weakest step: the bridge is where
        the two halves' weak steps meet. A song is never used twice; ``clash``: even the best
        makes the halves share a song or too long an artist run; ``kept``: every step got closer
        to the last song; ``song`` None: no song is left for the middle (:meth:`meet`)."""
        f, cfg = self.finder, self.finder.config
        s_end = self.ends.end
        assert s_end is not None
        tails, heads = forward.paths[:, -1], backward.paths[:, -1]
        # rough: each song's best way from a forward end and to a backward end, as the lists hold them
        songs, rough, line = [], [], self.line(t)
        for beam, ends in ((forward, tails), (backward, heads)):
            cand, owner, known_cb, known_cf = f._candidates(ends, line, self.ok, cfg.bridge_fanout)
            songs.append(cand)
            rough.append(beam.score[owner] + _utility(f.blend(ends[owner], known_cb, known_cf, self.w1, self.w2)))
        pool, where = np.unique(np.concatenate(songs), return_inverse=True)
        half = np.empty((2, pool.size))
        for side, (beam, at, r) in enumerate(zip((forward, backward), np.split(where, [songs[0].size]), rough)):
            half[side] = beam.score.max() + _utility(np.zeros(1))[0]  # not in that side's lists: a jump
            np.maximum.at(half[side], at, r)
        target = self.ends.target(t, self.length, pool)
        best = top_indices(half.sum(axis=0) + cfg.pull * target, cfg.bridge)
        mid, target = pool[best], target[best]
        fp, bp, artists = forward.paths, backward.paths, f.artists
        shared = (fp[:, None, :, None] == bp[None, :, None, :]).any(axis=(2, 3))  # the halves repeat each other
        if mid.size == 0:
            return self.meet(forward, backward, shared)
        nf, nm, nb = tails.size, mid.size, heads.size
        cb_into, cb_out = f._dots(tails, mid).clip(min=0).ravel(), f._dots(mid, heads).clip(min=0).ravel()
        into = f.measure(np.repeat(tails, nm), np.tile(mid, nf), self.w1, self.w2, cb_into)[0].reshape(nf, nm)
        out = f.measure(np.repeat(mid, nb), np.tile(heads, nm), self.w1, self.w2, cb_out)[0].reshape(nm, nb)
        # each side of the bridge song k: the path up to it (i, k) and the path from it (k, j), each
        # with its score, weakest step and broken rules (repeats, artist runs, progress)
        run = np.where(artists[tails][:, None] == artists[mid][None, :], forward.run[:, None] + 1, 1)
        ahead_in = (s_end[tails][:, None] < s_end[mid][None, :]) & forward.kept[:, None]
        ahead_out = (s_end[mid][:, None] < s_end[heads][None, :]) & backward.kept[None, :]
        side_in = forward.score[:, None] + _utility(into) + cfg.pull * target[None, :]
        side_in -= JOIN_PENALTY * (run > self.max_run) + JOIN_PENALTY / 2 * ~ahead_in
        side_out = _utility(out) + backward.score[None, :] - JOIN_PENALTY / 2 * ~ahead_out
        side_in[(fp[:, None, :] == mid[None, :, None]).any(axis=2)] = -np.inf  # never a song twice
        side_out[(bp[None, :, :] == mid[:, None, None]).any(axis=2)] = -np.inf
        low_in, low_out = np.minimum(forward.low[:, None], into), np.minimum(out, backward.low[None, :])
        # whole paths (i, k, j): both sides, the weakest step of all, the halves repeating each other
        # or an artist running on through the bridge song
        total = np.minimum(low_in[:, :, None], low_out[None, :, :])
        total *= cfg.bottleneck
        total += side_in[:, :, None]
        total += side_out[None, :, :]
        total -= (JOIN_PENALTY * shared)[:, None, :]
        same_out = artists[mid][:, None] == artists[heads][None, :]
        if same_out.any():
            total -= JOIN_PENALTY * (
                same_out[None, :, :] & (run[:, :, None] + backward.run[None, None, :] > self.max_run)
            )
        i, k, j = np.unravel_index(int(np.argmax(total)), total.shape)
        if not np.isfinite(total[i, k, j]):  # every song left repeats one of the halves'
            return self.meet(forward, backward, shared)
        clash = bool(
            run[i, k] > self.max_run or shared[i, j] or (same_out[k, j] and run[i, k] + backward.run[j] > self.max_run)
        )
        return int(i), int(mid[k]), int(j), backward, clash, bool(ahead_in[i, k] and ahead_out[k, j])

    def meet(self, forward: _Beam, backward: _Beam, shared: np.ndarray) -> tuple[int, None, int, _Beam, bool, bool]:
        """No song is left to stand between the halves: the best pair of them meets directly (a
        shorter path), as :meth:`bridge` answers; ``shared`` ``(F, B)``: the pair repeats a song."""
        s_end = self.ends.end
        assert s_end is not None
        total = forward.score[:, None] + backward.score[None, :] - JOIN_PENALTY * shared
        i, j = np.unravel_index(int(np.argmax(total)), total.shape)
        kept = bool(forward.kept[i] and backward.kept[j] and s_end[forward.paths[i, -1]] < s_end[backward.paths[j, -1]])
        return int(i), None, int(j), backward, bool(shared[i, j]), kept


def progress_share(toward: np.ndarray) -> float:
    """The share of a path's steps that end closer to the last song (``toward``: ``(L,)`` each
    song's content cosine with it)."""
    return float(np.mean(np.diff(toward) > 0)) if toward.size > 1 else 1.0


def _utility(similarity: np.ndarray) -> np.ndarray:
    """What a step adds to a path's score, ``-1 / (similarity + 0.1)**2``: steeply concave, so a
    path is judged by its weak steps more than by its strong ones (0.3 -> 0.4 gains almost as
    much as 0.4 -> 0.9)."""
    return -1.0 / (similarity + UTILITY_FLOOR) ** 2


def _mean(spaces: Spaces) -> np.ndarray:
    """The weighted mean of per-space closeness arrays."""
    total = sum(w for w, _ in spaces.values())
    return reduce(np.add, [w / total * x for w, x in spaces.values()])

"""The contract between the combiner and its scoring sides (serve_app/core/sides.py): each
scorer has every method of its side's Protocol with the same parameters, and the typed calls
reach them, in process as in the deployments."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from serve_app.core.collaborative import CollabScorer
from serve_app.core.content import ContentScorer
from serve_app.core.hybrid import Query
from serve_app.core.sides import (
    CollabSide,
    ContentSide,
    Diversify,
    ForAttributes,
    ListenerScore,
    PoolScorer,
    Score,
    run_call,
)


def protocol_methods(proto: type) -> set[str]:
    """The methods a Protocol declares, its base Protocols' included."""
    return {
        n
        for cls in proto.__mro__
        if cls in (PoolScorer, ContentSide, CollabSide)
        for n, v in vars(cls).items()
        if callable(v) and not n.startswith("_")
    }


@pytest.mark.parametrize("proto, scorer", [(ContentSide, ContentScorer), (CollabSide, CollabScorer)])
def test_each_scorer_has_its_side_s_methods_with_the_same_parameters(proto: type, scorer: type) -> None:
    methods = protocol_methods(proto)
    assert methods == ({"score", "for_attributes", "diversify"} if proto is ContentSide else {"score", "for_listener"})
    for name in methods:
        want, got = inspect.signature(getattr(proto, name)), inspect.signature(getattr(scorer, name))
        assert list(got.parameters) == list(want.parameters), name
        assert [p.annotation for p in got.parameters.values()] == [p.annotation for p in want.parameters.values()]
        assert got.return_annotation == want.return_annotation, name


def test_a_calls_side_routes_it_to_the_scorer_that_has_its_method(rec) -> None:
    seed = int(np.argmax(rec.combiner.listeners))
    plan = rec.combiner.plan_songs([seed], None, None)
    calls = [Score(side, plan.seeds, plan.seed_weights, plan.pool) for side in ("content", "collab")]
    cb, cf = (run_call(c, rec.content, rec.collab) for c in calls)
    assert cb.shape == cf.shape == plan.pool.shape and not np.array_equal(cb, cf)
    plain = run_call(ListenerScore(plan.seeds, plan.seed_weights, plan.pool, 0.0), rec.content, rec.collab)
    assert ListenerScore.side == "collab" and np.array_equal(plain, cf)  # taste 0: the walk's scores
    assert {ForAttributes.side, Diversify.side} == {"content"}
    found, _ = run_call(ForAttributes({"tags": "rock"}, 5), rec.content, rec.collab)
    assert 0 < len(found) <= 5
    order = np.argsort(-cb)[:20]
    picked = run_call(Diversify(plan.pool[order], cb[order], 0.5, 10), rec.content, rec.collab)
    assert len(picked) == 10 and len(set(picked.tolist())) == 10


def test_the_in_process_recommender_runs_every_call_kind(rec) -> None:
    seed = int(np.argmax(rec.combiner.listeners))
    asked = [
        Query("songs", seeds=(seed,), k=5, diversity=0.5),
        Query("attributes", attributes=(("tags", "rock"),), k=5),
    ]
    for query in asked:
        assert len(rec.run(query).items) == 5

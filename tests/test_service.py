"""API models (validation = the future 422s) and the service that answers them, without Ray."""

from __future__ import annotations

import pydantic
import pytest

from serve_app.artifacts import bundle
from serve_app.shell.api import RecommendRequest
from serve_app.shell.service import Service, UnknownSong


@pytest.mark.parametrize(
    "body",
    [
        {"song": "Shape of You", "artist": "Ed Sheeran", "k": 10},
        {"song": "Shape of You"},
        {"songs": [{"song": "a"}, {"song": "b", "artist": "c"}], "k": 100, "diversity": 1},
        {"user_id": "u1", "w1": 0, "w2": 1, "exclude_played": False},
        {"user_id": "new", "tags": ["indie"], "genres": ["Rock"]},
        {"attributes": {"tags": ["rock", "indie"], "genre": "Rock", "energy": 0.8, "tempo": 120}},
        {"song": "x", "user_id": "listener-7"},
    ],
)
def test_valid_requests(body):
    RecommendRequest.model_validate(body)


@pytest.mark.parametrize(
    "body, problem",
    [
        ({"song": "x", "k": 0}, "k"),
        ({"song": "x", "k": 101}, "k"),
        ({"song": "x", "w1": 1.5}, "w1"),
        ({"song": "x", "w2": -0.1}, "w2"),
        ({"song": "x", "w1": 0, "w2": 0}, "both be 0"),
        ({"song": "x" * 201}, "song"),
        ({"song": "x", "artist": "y" * 201}, "artist"),
        ({}, "give a song"),
        ({"song": "x", "songs": [{"song": "y"}]}, "give one of"),
        ({"songs": []}, "songs"),
        ({"attributes": {"tags": ["a"], "bogus": 1}}, "bogus"),
        ({"song": "x", "k": "ten"}, "k"),
        ({"song": ["not", "a", "string"]}, "song"),
    ],
)
def test_invalid_requests_name_the_problem(body, problem):
    with pytest.raises(pydantic.ValidationError) as err:
        RecommendRequest.model_validate(body)
    assert problem in str(err.value)


@pytest.fixture(scope="module")
def service(demo_bundle):
    return Service.from_bundle(bundle.load(str(demo_bundle)))


def test_minimal_form_answers_k_unique_songs_without_the_seed(service):
    row = service.front.bundle.catalog.iloc[7]
    resp = service.recommend(RecommendRequest(song=row["name"].upper(), artist=row["artist"], k=10))
    songs = [(r.song, r.artist) for r in resp.recommendations]
    assert len(songs) == 10 == len(set(songs))
    assert (row["name"], row["artist"]) not in songs
    assert resp.query.kind == "song" and resp.query.seeds[0].track_id == row["track_id"]
    assert resp.model_version == service.version and len(resp.request_id) == 32
    assert all(r.because for r in resp.recommendations)
    assert resp.weights_used.w1 == 0.3


def test_unknown_song_raises_with_suggestions(service):
    row = service.front.bundle.catalog.iloc[3]
    with pytest.raises(UnknownSong) as err:
        service.recommend(RecommendRequest(song=row["name"], artist="Nobody At All Xyz"))
    assert row["track_id"] in [s.track_id for s in err.value.suggestions]  # right title, wrong artist
    with pytest.raises(UnknownSong):
        service.recommend(RecommendRequest(song="zzqx qqqz no such song"))


def test_weights_reach_the_response(service):
    row = service.front.bundle.catalog.iloc[0]
    resp = service.recommend(RecommendRequest(song=row["name"], artist=row["artist"], w1=1.0, w2=0.0))
    assert (resp.weights_used.w1, resp.weights_used.w2) == (1.0, 0.0)
    assert all(r.cf_score >= 0 for r in resp.recommendations)


def test_other_query_kinds(service):
    cat = service.front.bundle.catalog
    session = service.recommend(
        RecommendRequest(songs=[{"song": cat.name[i], "artist": cat.artist[i]} for i in (1, 2, 3)], k=5)
    )
    assert session.query.kind == "songs" and len(session.query.seeds) == 3
    assert not {s.track_id for s in session.query.seeds} & {r.track_id for r in session.recommendations}
    fresh = service.recommend(RecommendRequest(user_id="never-seen-user", k=4))
    assert fresh.query.kind == "popular" and [r.track_id for r in fresh.recommendations] == list(cat.track_id[:4])
    genre = cat.genre[0] if isinstance(cat.genre[0], str) else None
    new_song = service.recommend(RecommendRequest(attributes={"tags": cat.tags[0], "genre": genre}))
    assert new_song.query.kind == "attributes" and new_song.weights_used.w2 == 0
    assert new_song.recommendations[0].track_id == cat.track_id[0]  # its own tags match it best


def test_search_autocompletes(service):
    name = service.front.bundle.catalog.name[0]
    assert service.front.search(name[:4], limit=5)[0].song.lower().startswith(name[:4].lower())

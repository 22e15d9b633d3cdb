"""The UI's logic against the real API app (in-process): what a person sees for a song, a
picked suggestion, an unknown song, bad input and a server that is down."""

from __future__ import annotations

import html

import pytest
from fastapi.testclient import TestClient

from serve_app.artifacts import bundle
from serve_app.artifacts.events import EventLog, read_events
from serve_app.shell.backend import LocalBackend
from serve_app.shell.http import create_app
from serve_app.shell.service import Service
from ui.app import SEP, Api, autocomplete, build, feedback_note, recommend_view, results_table, split_choice


@pytest.fixture(scope="module")
def service(demo_bundle) -> Service:
    return Service.from_bundle(bundle.load(str(demo_bundle)))


@pytest.fixture(scope="module")
def api(service) -> Api:
    return Api("http://testserver", client=TestClient(create_app(LocalBackend(service))))


def test_autocomplete_offers_title_and_artist(api, service):
    name, artist = service.front.bundle.catalog.name[0], service.front.bundle.catalog.artist[0]
    choices = autocomplete(api, name[:5])
    assert f"{name}{SEP}{artist}" in choices
    assert autocomplete(api, "x") is None and autocomplete(api, f"{name}{SEP}{artist}") is None


def test_a_picked_song_gives_the_table_and_the_weights_used(api, service):
    name, artist = service.front.bundle.catalog.name[3], service.front.bundle.catalog.artist[3]
    view = recommend_view(api, f"{name}{SEP}{artist}", None, None, 0.3, 0.7, 0.0, 10)
    assert view.message == "" and view.table.count("<tr>") == 11  # header + 10 songs
    assert view.weights.startswith(f"**Songs like:** {html.escape(name)}{SEP}{html.escape(artist)}  \n")
    assert "**Weights used:** content 0.30" in view.weights
    content_only = recommend_view(api, f"{name}{SEP}{artist}", None, None, 1.0, 0.0, 0.0, 10)
    assert content_only.table != view.table and "collaborative 0.00" in content_only.weights


def test_an_unknown_song_offers_suggestions(api, service):
    name = service.front.bundle.catalog.name[3]
    view = recommend_view(api, name[:-2] + "zq", "Nobody Q", None, 0.3, 0.7, 0.0, 10)
    assert "could not find" in view.message and view.table == ""
    assert view.suggestions is not None


def test_input_problems_and_a_dead_server_are_sentences():
    assert "first" in recommend_view(Api("http://127.0.0.1:9"), "", None, None, 0.3, 0.7, 0, 10).message
    assert "above 0" in recommend_view(Api("http://127.0.0.1:9"), "x", None, None, 0, 0, 0, 10).message
    down = recommend_view(Api("http://127.0.0.1:9", timeout=2), "x", None, None, 0.3, 0.7, 0, 10)
    assert "not reachable" in down.message and "Traceback" not in down.message


def test_a_thumbs_down_is_recorded_and_the_song_leaves_the_list(service, tmp_path):
    api = Api("http://testserver", client=TestClient(create_app(LocalBackend(service, EventLog(str(tmp_path))))))
    name, artist = service.front.bundle.catalog.name[3], service.front.bundle.catalog.artist[3]
    view = recommend_view(api, f"{name}{SEP}{artist}", None, "ui-listener", 0.3, 0.7, 0.0, 10)
    first = view.shown["recs"][0]
    assert view.shown["user_id"] == "ui-listener" and len(view.shown["recs"]) == 10
    note = feedback_note(api, view.shown, first["track_id"], "dislike")
    assert note.startswith("Noted:") and first["song"] in note
    logged = [e for e in read_events(str(tmp_path)) if e["type"] == "feedback"]
    assert [(e["track_id"], e["signal"], e["user_id"]) for e in logged] == [
        (first["track_id"], "dislike", "ui-listener")
    ]
    again = recommend_view(api, f"{name}{SEP}{artist}", None, "ui-listener", 0.3, 0.7, 0.0, 10)
    assert first["track_id"] not in [r["track_id"] for r in again.shown["recs"]]
    assert feedback_note(api, view.shown, "not-shown", "like") == "That song is no longer on the list."
    assert feedback_note(api, view.shown, first["track_id"], "like").startswith("Thanks")


def test_feedback_without_an_event_log_says_so(api, service):
    name, artist = service.front.bundle.catalog.name[3], service.front.bundle.catalog.artist[3]
    view = recommend_view(api, f"{name}{SEP}{artist}", None, None, 0.3, 0.7, 0.0, 10)
    note = feedback_note(api, view.shown, view.shown["recs"][0]["track_id"], "like")
    assert note.startswith("Your rating was not recorded: feedback is not recorded by this server")


def test_table_escapes_and_labels():
    table = results_table(
        [
            {
                "song": "<b>x</b>",
                "artist": "a&b",
                "score": 0.5,
                "cb_score": 0.2,
                "cf_score": 0.9,
                "because": "why",
                "preview_url": "https://p/x.mp3",
            }
        ]
    )
    assert "<b>x</b>" not in table and "&lt;b&gt;" in table and "a&amp;b" in table
    assert 'aria-label="preview of' in table and "<caption>" in table and 'data-track=""' in table
    assert split_choice("Song — Band", "ignored") == ("Song", "Band")
    assert split_choice(" Song ", " Band ") == ("Song", "Band")


def test_the_blocks_app_builds():
    assert build(Api("http://127.0.0.1:9")).title == "Segue"


def test_the_score_bar_draws_the_parts_of_the_score_not_the_raw_similarities():
    """0.7 of a default score comes from CF: the bar is mostly orange even when CF's raw
    similarity is small (it is normalised within the query before it is weighted)."""
    row = {
        "song": "s",
        "artist": "a",
        "score": 0.808,
        "cb_score": 0.26,
        "cf_score": 0.04,
        "cb_part": 0.208,
        "cf_part": 0.6,
        "because": "why",
    }
    table = results_table([row])
    assert 'aria-label="content part 0.21, collaborative part 0.60"' in table
    assert "width:12px;background:#3b82f6" in table and "width:36px;background:#f59e0b" in table
    assert "CB 0.21 + CF 0.60 (similarity 0.26 / 0.04)" in table
    popular = results_table([{**row, "cb_part": None, "cf_part": None}])
    assert "segue-bar" not in popular and "popular" in popular


def test_a_title_several_artists_share_asks_which_one(api, service):
    names = service.front.bundle.catalog["name"]
    shared = names[names.str.lower().duplicated(keep=False)].iloc[0]
    view = recommend_view(api, shared, None, None, 0.3, 0.7, 0.0, 10)
    assert view.message.endswith("Which one do you mean?") and len(view.suggestions) >= 2
    assert all(choice.startswith(shared) for choice in view.suggestions) and view.table == ""

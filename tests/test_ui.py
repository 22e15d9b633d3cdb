"""The UI's logic against the real API app (in-process): what a person sees for a song, a
picked suggestion, an unknown song, bad input and a server that is down; the filters and the
requests the controls build; a segue and a continuation as the Segue tab shows them."""

from __future__ import annotations

import html

import pytest
from fastapi.testclient import TestClient

from serve_app.artifacts import bundle
from serve_app.artifacts.events import EventLog, read_events
from serve_app.shell.backend import LocalBackend
from serve_app.shell.http import create_app
from serve_app.shell.service import Service
from ui.app import build, feedback_note, recommend_body, recommend_view
from ui.client import Api
from ui.filters import RANGES, filters_body
from ui.render import results_table
from ui.segue_tab import segue_body, segue_table, segue_view
from ui.songs import SEP, autocomplete, split_choice


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
    assert note.startswith(f"Less like '{first['song']}'") and "songs like it come lower" in note
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
    assert 'data-signal="dislike" aria-label="Less like &lt;b&gt;x&lt;/b&gt;"' in table
    assert "<em>less like this</em>" in table
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


UNSET = [end for _, low, high, _ in RANGES.values() for end in (low, high)]  # the sliders as the page opens


def choice_of(service, row: int) -> str:
    """Catalog song ``row`` as the song box lists it."""
    catalog = service.front.bundle.catalog
    return f"{catalog.name[row]}{SEP}{catalog.artist[row]}"


def test_the_filters_sent_are_only_the_ones_set():
    assert filters_body(*UNSET, "") is None and filters_body(*UNSET, " , ") is None  # the defaults filter nothing
    assert filters_body(100, 250, 1900, 1999, 0.2, 0.8, " Rock, , jazz ") == {
        "tempo": [100, None],
        "year": [None, 1999],
        "energy": [0.2, 0.8],
        "genres": ["Rock", "jazz"],
    }
    body = recommend_body("Song — Band", None, " u1 ", 0.3, 0.7, 0.1, 12.0, {"tempo": [90, 120]})
    assert body == {
        "k": 12,
        "w1": 0.3,
        "w2": 0.7,
        "diversity": 0.1,
        "song": "Song",
        "artist": "Band",
        "user_id": "u1",
        "filters": {"tempo": [90, 120]},
    }
    assert "filters" not in recommend_body("Song", "Band", None, 0.3, 0.7, 0.0, 10, None)


def test_a_tempo_range_keeps_every_result_within_it(api, service):
    catalog = service.front.bundle.catalog
    tempo = dict(zip(catalog["track_id"], catalog["tempo"]))
    song = choice_of(service, 3)
    unfiltered = recommend_view(api, song, None, None, 0.3, 0.7, 0.0, 10)
    assert any(not 100 <= tempo[r["track_id"]] <= 125 for r in unfiltered.shown["recs"])
    view = recommend_view(api, song, None, None, 0.3, 0.7, 0.0, 10, filters_body(100, 125, *UNSET[2:], ""))
    assert view.message == "" and view.shown["recs"]
    assert all(100 <= tempo[r["track_id"]] <= 125 for r in view.shown["recs"])


def test_a_filter_few_songs_pass_shows_the_note_and_one_none_pass_names_the_field(api, service):
    song = choice_of(service, 3)
    assert "**Note:**" not in recommend_view(api, song, None, None, 0.3, 0.7, 0.0, 10).weights
    genres = service.front.bundle.catalog["genre"].value_counts()
    rare = str(genres.index[-1])  # the rarest genre: fewer songs than asked for
    assert genres.iloc[-1] < 50
    view = recommend_view(api, song, None, None, 0.3, 0.7, 0.0, 50, filters_body(*UNSET, rare))
    shown = len(view.shown["recs"])
    assert view.message == "" and shown < 50 and view.table.count("<tr>") in (0, shown + 1)
    assert f"**Note:** only {shown} song(s) pass the filters" in view.weights
    none = recommend_view(api, song, None, None, 0.3, 0.7, 0.0, 10, filters_body(240, 250, *UNSET[2:], ""))
    assert none.message == "Please check the input: filters.tempo: no song in the catalog passes tempo in [240, inf]."
    assert none.table == "" and none.weights == ""


def test_the_segue_request_from_the_boxes():
    assert segue_body("A — X", "B — Y", 12.0) == {
        "from": {"song": "A", "artist": "X"},
        "to": {"song": "B", "artist": "Y"},
        "length": 12,
    }
    assert segue_body(" Typed title ", "  ", 5) == {"from": {"song": "Typed title", "artist": None}, "length": 5}
    assert segue_body(None, "B — Y", 5) is None


def test_a_segue_lists_the_path_from_the_first_song_to_the_last_with_a_bar_per_step(api, service):
    start, end = choice_of(service, 3), choice_of(service, 40)
    view = segue_view(api, start, end, 8)
    answer = api.segue(segue_body(start, end, 8)).body
    names = [f"{s['song']}{SEP}{s['artist']}" for s in answer["path"]]
    assert view.message == "" and len(names) == 8 and (names[0], names[-1]) == (start, end)
    assert view.table == segue_table(answer["path"]) and view.table.count("<tr>") == 9  # header + 8 songs
    rows = view.table.split("<tbody>")[1].split("</tr>")[:-1]
    assert [html.unescape(r.split("<td>")[2].removesuffix("</td>")) for r in rows] == [
        n.rpartition(SEP)[0] for n in names
    ]
    assert view.table.count('class="segue-bar"') == 7 and "<td>start</td>" in rows[0]
    assert view.summary.startswith(f"**Segue** from {html.escape(start)} to {html.escape(end)}: 8 songs  \n")
    kept = "Complete" if answer["complete"] else "Not complete"
    assert f"**{kept}:** {html.escape(answer['reason'])}" in view.summary
    assert f"mean similarity {answer['summary']['mean_similarity']:.2f}" in view.summary
    assert "% of steps get closer to the last song" in view.summary


def test_without_a_last_song_the_segue_is_a_continuation(api, service):
    view = segue_view(api, choice_of(service, 3), "", 5)
    assert view.message == "" and view.table.count("<tr>") == 6
    assert view.summary.startswith(f"**Continuation** of {html.escape(choice_of(service, 3))}: 5 songs")
    assert "closer to the last song" not in view.summary and "to the last song" not in view.table


def test_segue_errors_are_the_main_tabs_sentences(api, service):
    start = choice_of(service, 3)
    title = service.front.bundle.catalog.name[40]
    to_unknown = segue_view(api, start, title[:-2] + "zq", 6)
    assert to_unknown.box == "to" and "could not find" in to_unknown.message and to_unknown.table == ""
    from_unknown = segue_view(api, title[:-2] + "zq", start, 6)
    assert from_unknown.box == "from" and from_unknown.suggestions is not None
    same = segue_view(api, start, start, 6)
    assert same.message.startswith("Please check the input: from and to are the same song")
    assert segue_view(api, "", start, 6).message == "Pick a song to start from."
    down = segue_view(Api("http://127.0.0.1:9", timeout=2), start, None, 6)
    assert "not reachable" in down.message and down.table == ""


def test_the_segue_table_escapes_and_draws_each_step():
    path = [
        {"song": "<i>a</i>", "artist": "x&y", "similarity": None, "cb_score": None, "cf_score": None, "toward": 0.1,
         "because": "where the playlist starts", "preview_url": "https://p/a.mp3", "track_id": "T1"},
        {"song": "b", "artist": "y", "similarity": 0.5, "cb_score": 0.4, "cf_score": 0.2, "toward": 0.7,
         "because": "<why>", "preview_url": None, "track_id": "T2"},
        {"song": "c", "artist": "z", "similarity": 1.0, "cb_score": 0.9, "cf_score": 0.0, "toward": None,
         "because": "why", "preview_url": None, "track_id": "T3"},
    ]  # fmt: skip
    table = segue_table(path)
    assert "<i>a</i>" not in table and "&lt;i&gt;a&lt;/i&gt;" in table and "x&amp;y" in table
    assert "&lt;why&gt;" in table and "<caption>Segue path</caption>" in table
    assert 'aria-label="preview of &lt;i&gt;a&lt;/i&gt;"' in table and 'data-track="T1"' in table
    assert 'aria-label="step similarity 0.50"' in table and "width:30px;background:#8b5cf6" in table
    assert "CB 0.40 / CF 0.20, to the last song 0.70" in table and "CB 0.90 / CF 0.00</small>" in table
    assert "width:60px;background:#8b5cf6" in table  # 1 is the full 60 px

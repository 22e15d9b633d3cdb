"""The Gradio UI in a real browser (headless system Chromium driven by Playwright) against the
real HTTP API in-process: autocomplete and the recommend button, the weight sliders,
"did you mean", a server that is down, a thumbs-down that is recorded and pushes the song and
songs like it down, a tempo filter, and a segue on the Segue tab. Each test leaves its
screenshot in reports/screenshots/<test>.png; ``SEGUE_DOCS_SCREENSHOT=1`` (``make
docs-screenshot``) also refreshes docs/ui.png from the first one and docs/img/segue.png from
the segue's.

Skipped only when no Chromium executable is found (``make test`` installs Debian's).
"""

from __future__ import annotations

import os
import re

from playwright.sync_api import expect

from serve_app.artifacts.events import read_events
from tests.ui_browser import ROOT, SEP, browser, ui_page, ui_stack  # noqa: F401  (fixtures)

W1, W2 = "Content weight w1", "Collaborative weight w2"


def pick_typed_song(ui_page, ui_stack) -> str:
    """Type part of a title, pick the song from the autocomplete list; its ``title — artist``."""
    prefix, choice = ui_stack.typeable_songs()[0]
    ui_page.type_song(prefix)
    ui_page.pick_song(choice)
    return choice


def docs_screenshot(ui_page, path) -> None:
    """Refresh a screenshot the docs show, when asked to (``SEGUE_DOCS_SCREENSHOT=1``) or missing."""
    if os.environ.get("SEGUE_DOCS_SCREENSHOT") == "1" or not path.exists():
        ui_page.screenshot(path)


def test_typed_title_picked_from_autocomplete_gives_ten_songs(ui_page, ui_stack):
    choice = pick_typed_song(ui_page, ui_stack)
    ui_page.recommend()
    expect(ui_page.result_rows).to_have_count(10)
    title, _, artist = choice.rpartition(SEP)
    ui_page.expect_results(ui_stack.recommend(title, artist))
    expect(ui_page.weights_line).to_contain_text("Weights used: content 0.30, collaborative")
    expect(ui_page.message).to_have_text("")
    docs_screenshot(ui_page, ROOT / "docs" / "ui.png")


def test_weight_sliders_rerank_to_the_content_only_list(ui_page, ui_stack):
    choice = pick_typed_song(ui_page, ui_stack)
    title, _, artist = choice.rpartition(SEP)
    default = ui_stack.recommend(title, artist)
    content_only = ui_stack.recommend(title, artist, w1=1.0, w2=0.0)
    assert content_only != default
    ui_page.expect_results(default)  # picking the song asked once with the default weights

    ui_page.drag_slider(W1, "max")
    expect(ui_page.slider_number(W1)).to_have_value("1")
    expect(ui_page.weights_line).to_contain_text("content 1.00")  # re-ranked on release
    ui_page.drag_slider(W2, "min")
    expect(ui_page.slider_number(W2)).to_have_value("0")

    expect(ui_page.weights_line).to_contain_text("content 1.00, collaborative 0.00")
    ui_page.expect_results(content_only)
    assert ui_page.result_songs() != default


def test_unknown_song_offers_did_you_mean_and_a_pick_gives_results(ui_page, ui_stack):
    typed, choice = ui_stack.misspelt_song()
    ui_page.type_song(typed)
    ui_page.recommend()
    expect(ui_page.message).to_contain_text("could not find")
    expect(ui_page.message).to_contain_text("Did you mean")
    expect(ui_page.suggestions).to_be_visible()
    expect(ui_page.results).to_have_count(0)

    ui_page.suggestion(choice).click()
    expect(ui_page.song_box).to_have_value(choice)
    expect(ui_page.result_rows).to_have_count(10)
    title, _, artist = choice.rpartition(SEP)
    ui_page.expect_results(ui_stack.recommend(title, artist))
    expect(ui_page.message).to_have_text("")
    expect(ui_page.suggestions).to_be_hidden()


def test_api_down_shows_a_plain_message(ui_page, ui_stack):
    pick_typed_song(ui_page, ui_stack)
    expect(ui_page.result_rows).to_have_count(10)
    ui_stack.api_server.stop()
    try:
        ui_page.recommend()
        expect(ui_page.message).to_contain_text("is not reachable")
        expect(ui_page.message).to_contain_text("Is it running?")
        expect(ui_page.results).to_have_count(0)
        expect(ui_page.toasts).to_have_count(0)
        for text in ("Traceback", 'File "', "Exception", "httpx"):
            expect(ui_page.page.get_by_text(text)).to_have_count(0)
        expect(ui_page.page.get_by_text("Error", exact=True)).to_have_count(0)  # Gradio's failed-event badge
    finally:
        ui_stack.api_server.start()


def test_a_thumbs_down_is_recorded_and_pushes_the_song_and_songs_like_it_down(ui_page, ui_stack):
    choice = pick_typed_song(ui_page, ui_stack)
    ui_page.recommend()
    expect(ui_page.result_rows).to_have_count(10)
    before = ui_page.result_songs()
    gone_title, _, gone_artist = before[0].rpartition(SEP)
    expect(ui_page.page.get_by_text("less like this", exact=True)).to_be_visible()

    ui_page.rating_button(1, "dislike").click()
    expect(ui_page.message).to_contain_text(f"Less like '{gone_title}' by {gone_artist}")
    expect(ui_page.message).to_contain_text("songs like it come lower, for this session")
    first_song = ui_page.result_rows.first.locator("td:nth-child(2)")
    expect(first_song).not_to_have_text(gone_title)  # the list was asked again, without it
    # less like this: the session's answer is the one that avoids the disliked song
    title, _, artist = choice.rpartition(SEP)
    avoiding = ui_stack.recommend(title, artist, avoid=[{"song": gone_title, "artist": gone_artist}])
    ui_page.expect_results(avoiding)

    ui_page.recommend()  # asked again by hand: still gone
    expect(ui_page.message).to_have_text("")
    ui_page.expect_results(avoiding)
    assert before[0] not in ui_page.result_songs()

    logged = [e for e in read_events(ui_stack.events) if e["type"] == "feedback"]
    assert len(logged) == 1 and logged[0]["signal"] == "dislike" and logged[0]["user_id"].startswith("ui-")
    front = ui_stack.service.front
    track = front.track_index(logged[0]["track_id"])
    assert (front._name[track], front._artist[track]) == (gone_title, gone_artist)


def test_thumbs_down_on_two_songs_in_a_row_counts_both(ui_page, ui_stack):
    """A second 👎 sent before the list from the first one is back still names its song (the
    buttons are in the table, not handlers of a list the first 👎 replaced)."""
    pick_typed_song(ui_page, ui_stack)
    ui_page.recommend()
    expect(ui_page.result_rows).to_have_count(10)
    first, second = ui_page.result_songs()[:2]
    ui_page.result_rows.evaluate_all(  # both clicked before either is answered
        "rows => rows.slice(0, 2).forEach(r => r.querySelector('button[data-signal=dislike]').click())"
    )
    expect(ui_page.message).to_contain_text(f"Less like '{second.rpartition(SEP)[0]}'")
    logged = [e for e in read_events(ui_stack.events) if e["type"] == "feedback" and e["signal"] == "dislike"]
    front = ui_stack.service.front
    tracks = [front.track_index(e["track_id"]) for e in logged[-2:]]
    assert [f"{front._name[t]}{SEP}{front._artist[t]}" for t in tracks] == [first, second]
    assert not {first, second} & set(ui_page.result_songs())


def test_playing_a_preview_is_recorded(ui_page, ui_stack):
    pick_typed_song(ui_page, ui_stack)
    ui_page.recommend()
    expect(ui_page.result_rows).to_have_count(10)
    audio = ui_page.results.locator("audio[data-track]").first
    track = audio.get_attribute("data-track")
    audio.evaluate("a => { a.muted = true; a.play().catch(() => {}); }")  # what its play button does
    expect(ui_page.message).to_contain_text("Playing")
    plays = [e for e in read_events(ui_stack.events) if e["type"] == "feedback" and e["signal"] == "play"]
    assert [e["track_id"] for e in plays][-1:] == [track] and plays[-1]["user_id"].startswith("ui-")


def test_a_tempo_range_keeps_every_result_within_it(ui_page, ui_stack):
    choice = pick_typed_song(ui_page, ui_stack)
    title, _, artist = choice.rpartition(SEP)
    expect(ui_page.result_rows).to_have_count(10)
    catalog = ui_stack.service.front.bundle.catalog
    tempo = dict(zip(catalog["name"] + SEP + catalog["artist"], catalog["tempo"]))
    low, high = 100, 125
    assert any(not low <= tempo[s] <= high for s in ui_page.result_songs())  # the filter has work to do

    ui_page.open_filters()
    ui_page.type_number("Tempo (BPM) from", low)
    ui_page.type_number("Tempo (BPM) to", high)
    ui_page.recommend()
    filtered = ui_stack.recommend(title, artist, filters={"tempo": [low, high]})
    ui_page.expect_results(filtered)
    assert filtered and all(low <= tempo[s] <= high for s in ui_page.result_songs())
    if len(filtered) < 10:
        expect(ui_page.weights_line).to_contain_text(f"Note: only {len(filtered)} song(s) pass the filters")
    else:
        expect(ui_page.weights_line).not_to_contain_text("Note:")


def test_a_segue_goes_from_one_song_to_the_other_in_order_with_bars(ui_page, ui_stack):
    (from_prefix, start), (to_prefix, end) = ui_stack.typeable_songs(2)
    length = 8
    expected = ui_stack.segue(start, end, length)
    path = [f"{s['song']}{SEP}{s['artist']}" for s in expected["path"]]
    assert expected["complete"] and len(path) == length and (path[0], path[-1]) == (start, end)

    ui_page.open_tab("Segue")
    ui_page.type_song(from_prefix, ui_page.from_box)
    ui_page.pick_song(start, ui_page.from_box)
    ui_page.type_song(to_prefix, ui_page.to_box)
    ui_page.pick_song(end, ui_page.to_box)
    ui_page.type_number("Length (songs, the first and last included)", length)
    ui_page.segue_button.click()

    expect(ui_page.segue_rows).to_have_count(length)
    assert ui_page.result_songs(ui_page.segue_rows) == path  # in path order, from the first to the last
    expect(ui_page.segue_rows.first.locator("td:nth-child(4)")).to_have_text("start")
    bars = ui_page.segue_path.get_by_role("img", name=re.compile(r"^step similarity \d\.\d\d$"))
    expect(bars).to_have_count(length - 1)
    expect(ui_page.segue_summary).to_contain_text(f"Segue from {start} to {end}: {length} songs")
    expect(ui_page.segue_summary).to_contain_text(f"Complete: {expected['reason']}")
    expect(ui_page.segue_message).to_have_text("")
    docs_screenshot(ui_page, ROOT / "docs" / "img" / "segue.png")


def test_a_segue_with_an_unknown_last_song_offers_did_you_mean_for_that_box(ui_page, ui_stack):
    typed, choice = ui_stack.misspelt_song()
    from_prefix, start = next((p, c) for p, c in ui_stack.typeable_songs(2) if c != choice)
    ui_page.open_tab("Segue")
    ui_page.type_song(from_prefix, ui_page.from_box)
    ui_page.pick_song(start, ui_page.from_box)
    ui_page.type_song(typed, ui_page.to_box)
    ui_page.segue_button.click()
    expect(ui_page.segue_message).to_contain_text(f"We could not find {typed!r}. Did you mean one of these?")
    expect(ui_page.segue_path).to_have_count(0)

    ui_page.suggestion(choice, ui_page.segue_suggestions).click()
    expect(ui_page.to_box).to_have_value(choice)
    expect(ui_page.from_box).to_have_value(start)
    expect(ui_page.segue_rows).to_have_count(12)  # the default length
    assert ui_page.result_songs(ui_page.segue_rows) == [
        f"{s['song']}{SEP}{s['artist']}" for s in ui_stack.segue(start, choice, 12)["path"]
    ]

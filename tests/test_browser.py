"""The Gradio UI in a real browser (headless system Chromium driven by Playwright) against the
real HTTP API in-process: autocomplete and the recommend button, the weight sliders,
"did you mean", a server that is down, and a thumbs-down that is recorded and takes the
song off the list. Each test leaves its screenshot in
reports/screenshots/<test>.png; ``SEGUE_DOCS_SCREENSHOT=1`` (``make docs-screenshot``) also
refreshes docs/ui.png from the first one.

Skipped only when no Chromium executable is found (``make test`` installs Debian's).
"""

from __future__ import annotations

import os

from playwright.sync_api import expect

from serve_app.artifacts.events import read_events
from tests.ui_browser import ROOT, SEP, browser, ui_page, ui_stack  # noqa: F401  (fixtures)

W1, W2 = "Content weight w1", "Collaborative weight w2"


def pick_typed_song(ui_page, ui_stack) -> str:
    """Type part of a title, pick the song from the autocomplete list; its ``title — artist``."""
    prefix, choice = ui_stack.typeable_song()
    ui_page.type_song(prefix)
    ui_page.pick_song(choice)
    return choice


def test_typed_title_picked_from_autocomplete_gives_ten_songs(ui_page, ui_stack):
    choice = pick_typed_song(ui_page, ui_stack)
    ui_page.recommend()
    expect(ui_page.result_rows).to_have_count(10)
    title, _, artist = choice.rpartition(SEP)
    ui_page.expect_results(ui_stack.recommend(title, artist))
    expect(ui_page.weights_line).to_contain_text("Weights used: content 0.30, collaborative")
    expect(ui_page.message).to_have_text("")
    if os.environ.get("SEGUE_DOCS_SCREENSHOT") == "1" or not (ROOT / "docs" / "ui.png").exists():
        ui_page.screenshot(ROOT / "docs" / "ui.png")


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


def test_a_thumbs_down_is_recorded_and_the_song_leaves_the_list(ui_page, ui_stack):
    pick_typed_song(ui_page, ui_stack)
    ui_page.recommend()
    expect(ui_page.result_rows).to_have_count(10)
    before = ui_page.result_songs()
    gone_title, _, gone_artist = before[0].rpartition(SEP)

    ui_page.rating_button(1, "dislike").click()
    expect(ui_page.message).to_contain_text("will not come back in this session")
    first_song = ui_page.result_rows.first.locator("td:nth-child(2)")
    expect(first_song).not_to_have_text(gone_title)  # the list was asked again, without it
    expect(ui_page.result_rows).to_have_count(10)
    assert before[0] not in ui_page.result_songs()

    logged = [e for e in read_events(ui_stack.events) if e["type"] == "feedback"]
    assert len(logged) == 1 and logged[0]["signal"] == "dislike" and logged[0]["user_id"].startswith("ui-")
    front = ui_stack.service.front
    track = front.track_index(logged[0]["track_id"])
    assert (front._name[track], front._artist[track]) == (gone_title, gone_artist)


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

"""The Gradio UI over the HTTP API (README, "Using the UI"): ``python -m ui.app --api http://127.0.0.1:8000``.

It only talks HTTP to the API, so it works the same against ``make run`` on a laptop and
against a Serve cluster behind a load balancer. Two tabs: Recommend (this module) and Segue
(``ui/segue_tab.py``).
"""

from __future__ import annotations

import argparse
import html
import uuid
from dataclasses import dataclass, field

import gradio as gr

from ui.client import Api
from ui.filters import filter_controls, filters_body
from ui.render import results_table
from ui.segue_tab import segue_tab
from ui.songs import asked_text, did_you_mean, song_box, song_choice, split_choice


@dataclass
class View:
    """What one recommendation shows: a message, "did you mean" choices, the lines above the
    table (the songs it is for, the weights used, the note), the table."""

    message: str = ""
    suggestions: list[str] | None = None
    weights: str = ""
    table: str = ""
    shown: dict = field(default_factory=dict)  # request_id, user_id, recs: what feedback refers to


def recommend_body(
    song_value: str | None,
    artist_value: str | None,
    user_value: str | None,
    w1: float,
    w2: float,
    diversity: float,
    k: float,
    filters: dict | None = None,
) -> dict:
    """The ``/recommend`` request for the tab's controls: ``filters`` and the user id only when set."""
    title, by = split_choice(song_value, artist_value)
    body: dict = {"k": int(k), "w1": w1, "w2": w2, "diversity": diversity}
    if title:
        body.update(song=title, artist=by)
    if user_value and user_value.strip():
        body["user_id"] = user_value.strip()
    if filters:
        body["filters"] = filters
    return body


def answer_lines(answer: dict) -> str:
    """The lines above the table: the song the answer is for (never only implied), the weights
    used and why, and the API's note when the list is shorter than asked."""
    used = answer["weights_used"]
    lines = [f"**Weights used:** content {used['w1']:.2f}, collaborative {used['w2']:.2f} — {used['reason']}"]
    seeds = answer["query"].get("seeds") or []
    if seeds:
        lines.insert(0, "**Songs like:** " + ", ".join(html.escape(song_choice(s)) for s in seeds))
    if answer.get("note"):
        lines.append(f"**Note:** {html.escape(answer['note'])}")
    return "  \n".join(lines)


def recommend_view(
    api: Api,
    song_value: str | None,
    artist_value: str | None,
    user_value: str | None,
    w1: float,
    w2: float,
    diversity: float,
    k: float,
    filters: dict | None = None,
) -> View:
    """Ask the API and turn the answer (or the failure) into what the page shows."""
    body = recommend_body(song_value, artist_value, user_value, w1, w2, diversity, k, filters)
    if "song" not in body and "user_id" not in body:
        return View("Type a song (or a user id) first.")
    if w1 == 0 and w2 == 0:
        return View("At least one of the two weights must be above 0.")
    answer = api.recommend(body)
    if answer.status == 404 and isinstance(answer.body, dict):
        return View(*did_you_mean(answer.body, asked_text(body.get("song", ""), body.get("artist"))))
    if answer.message:
        return View(answer.message)
    recs = answer.body["recommendations"]
    shown = {
        "request_id": answer.body["request_id"],
        "user_id": body.get("user_id"),
        "recs": [{"track_id": r["track_id"], "song": r["song"], "artist": r["artist"]} for r in recs],
    }
    return View("", None, answer_lines(answer.body), results_table(recs), shown)


SIGNALS = {  # what the page says after each kind of rating
    "like": "Thanks: you liked {name}.",
    "dislike": "Less like {name}: it is gone, and songs like it come lower, for this session.",
    "play": "Playing {name}.",
}


def feedback_note(api: Api, shown: dict, track_id: str, signal: str) -> str:
    """Send one rating of a shown song; the sentence the page shows about it."""
    rec = next((r for r in shown.get("recs", []) if r["track_id"] == track_id), None)
    if not shown.get("request_id") or rec is None:
        return "That song is no longer on the list."
    answer = api.feedback(shown["request_id"], track_id, signal, shown.get("user_id"))
    if answer.message:
        return answer.message
    if answer.status != 200:
        return f"Your rating was not recorded (HTTP {answer.status})."
    name = f"'{rec['song']}' by {rec['artist']}"
    return SIGNALS[signal].format(name=name)


PAGE_JS = """
() => {
  let queue = Promise.resolve();  // one rating at a time: each is in the box when its send is clicked
  const send = (signal, track) => {
    const box = document.querySelector('#segue-rated textarea, #segue-rated input');
    const button = document.querySelector('#segue-rated-send');
    if (!track || !box || !button) return;
    queue = queue.then(() => new Promise((done) => {
      box.value = signal + ' ' + track;
      box.dispatchEvent(new Event('input', {bubbles: true}));
      setTimeout(() => { button.click(); done(); }, 50);
    }));
  };
  document.addEventListener('play', (e) => {
    const t = e.target;
    if (t && t.dataset && t.closest && t.closest('#segue-results')) send('play', t.dataset.track);
  }, true);
  document.addEventListener('click', (e) => {
    const b = e.target && e.target.closest ? e.target.closest('#segue-results button.segue-rate') : null;
    if (b) send(b.dataset.signal, b.dataset.track);
  });
}
"""


def launch_options() -> dict:
    """What ``launch()`` needs besides the address: the script that sends the results' ratings
    and preview plays (buttons and players inside the results' HTML) to the page's feedback event."""
    return {"js": PAGE_JS}


def recommend_tab(api: Api) -> None:
    """The Recommend tab: song box with autocomplete, sliders that re-rank as they move, filters,
    the results and their rating buttons (called inside ``gr.Tab``)."""
    with gr.Row():
        song = song_box(api, "Song", "Type a title, then pick it from the list")
        artist = gr.Textbox(label="Artist (optional)")
        user = gr.Textbox(label="User id (optional: recommendations from that listener's history)")
    with gr.Row():
        w1 = gr.Slider(0, 1, value=0.3, step=0.05, label="Content weight w1 (tags, genre, sound)")
        w2 = gr.Slider(0, 1, value=0.7, step=0.05, label="Collaborative weight w2 (what listeners also play)")
        diversity = gr.Slider(0, 1, value=0.0, step=0.1, label="Diversity (fewer songs per artist, more variety)")
        k = gr.Slider(1, 50, value=10, step=1, label="How many songs")
    filter_sliders, genres = filter_controls()
    go = gr.Button("Recommend", variant="primary")
    message = gr.Markdown(elem_id="segue-message")
    suggestions = gr.Radio(label="Did you mean", choices=[], visible=False, elem_id="segue-suggestions")
    weights_used = gr.Markdown(elem_id="segue-weights")
    results = gr.HTML(elem_id="segue-results")
    shown = gr.State({})
    listener = gr.State(lambda: f"ui-{uuid.uuid4().hex[:12]}")  # this page's listener, when no user id is typed
    rated = gr.Textbox(visible="hidden", elem_id="segue-rated", label="rated song")  # "<signal> <track_id>"
    rated_send = gr.Button("rated", visible="hidden", elem_id="segue-rated-send")

    def recommend(song_v, artist_v, user_v, w1_v, w2_v, diversity_v, k_v, session, *filter_values):
        """A song query names this session's listener (for feedback and its dislikes)."""
        user_v = (user_v or "").strip() or (session if (song_v or "").strip() else None)
        filters = filters_body(*filter_values)
        view = recommend_view(api, song_v, artist_v, user_v, w1_v, w2_v, diversity_v, k_v, filters)
        picks = gr.update(choices=view.suggestions or [], value=None, visible=bool(view.suggestions))
        return view.message, picks, view.weights, view.table, view.shown

    inputs = [song, artist, user, w1, w2, diversity, k, listener, *filter_sliders, genres]
    outputs = [message, suggestions, weights_used, results, shown]
    go.click(recommend, inputs, outputs)
    song.select(recommend, inputs, outputs)
    for slider in (w1, w2, diversity, k, *filter_sliders):
        slider.release(recommend, inputs, outputs, show_progress="hidden")
    genres.submit(recommend, inputs, outputs)
    suggestions.select(lambda picked: (picked, ""), suggestions, [song, artist]).then(recommend, inputs, outputs)

    def rate(current: dict, signal_track: str, *values):
        """A 👍, 👎 or preview play of a shown song: recorded; a 👎 also asks for the list again
        (the session's dislikes now push that song and songs like it down)."""
        signal, _, track = (signal_track or "").partition(" ")
        if signal not in SIGNALS:
            return (gr.skip(),) * len(outputs)
        note = feedback_note(api, current, track, signal)
        if signal != "dislike":
            return (note, *(gr.skip(),) * (len(outputs) - 1))
        fresh = recommend(*values)
        return (fresh[0] or note, *fresh[1:])

    # "multiple": a rating sent while the one before is still running is queued, not dropped
    rated_send.click(rate, [shown, rated, *inputs], outputs, show_progress="hidden", trigger_mode="multiple")


def build(api: Api) -> gr.Blocks:
    """The Blocks app: the Recommend and Segue tabs over one API client."""
    with gr.Blocks(title="Segue") as demo:
        gr.Markdown(
            "# Segue\nName a song you like; get songs to play next, each with the reason. "
            "Or make a segue: a playlist that travels from one song to another."
        )
        with gr.Tab("Recommend"):
            recommend_tab(api)
        with gr.Tab("Segue"):
            segue_tab(api)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ui.app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the Segue HTTP API (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    build(Api(args.api)).launch(server_name=args.host, server_port=args.port, **launch_options())


if __name__ == "__main__":
    main()

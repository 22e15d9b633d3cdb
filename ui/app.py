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
    return {
        "like": f"Thanks: you liked {name}.",
        "dislike": f"Less like {name}: it is gone, and songs like it come lower, for this session.",
        "play": f"Playing {name}.",
    }[signal]


PLAY_JS = """
() => document.addEventListener('play', (e) => {
  const track = e.target && e.target.dataset ? e.target.dataset.track : null;
  const box = document.querySelector('#segue-played textarea, #segue-played input');
  const send = document.querySelector('#segue-played-send');
  if (!track || !box || !send || !e.target.closest('#segue-results')) return;
  box.value = track;
  box.dispatchEvent(new Event('input', {bubbles: true}));
  setTimeout(() => send.click(), 50);
}, true)
"""


def launch_options() -> dict:
    """What ``launch()`` needs besides the address: the script that reports the recommendations'
    preview plays (the Segue tab's previews are not a response feedback can refer to)."""
    return {"js": PLAY_JS}


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
    played = gr.Textbox(visible="hidden", elem_id="segue-played", label="played preview")
    played_send = gr.Button("played", visible="hidden", elem_id="segue-played-send")

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
    played_send.click(
        lambda current, track: feedback_note(api, current, track, "play"),
        [shown, played],
        message,
        show_progress="hidden",
    )

    @gr.render(inputs=shown)
    def rate(current: dict):
        recs = current.get("recs") if current else None
        if not recs:
            return
        with gr.Column(elem_id="segue-feedback"):
            gr.Markdown(
                "**Rate these songs** — 👎 means *less like this*: it drops the song and pushes similar "
                "ones down for this session."
            )
            for i, rec in enumerate(recs, 1):
                with gr.Row(equal_height=True):
                    gr.Markdown(f"{i}. {html.escape(rec['song'])} — {html.escape(rec['artist'])}")
                    like = gr.Button(
                        "👍 Like", size="sm", min_width=80, elem_id=f"segue-like-{i}", elem_classes="segue-like"
                    )
                    dislike = gr.Button(
                        "👎 Less like this",
                        size="sm",
                        min_width=80,
                        elem_id=f"segue-dislike-{i}",
                        elem_classes="segue-dislike",
                    )
                like.click(
                    lambda cur, t=rec["track_id"]: feedback_note(api, cur, t, "like"),
                    shown,
                    message,
                    show_progress="hidden",
                )

                def disliked(cur, *values, t=rec["track_id"]):
                    note = feedback_note(api, cur, t, "dislike")
                    fresh = recommend(*values)
                    return (note if not fresh[0] else fresh[0], *fresh[1:])

                dislike.click(disliked, [shown, *inputs], outputs)


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

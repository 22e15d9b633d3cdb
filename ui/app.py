"""The Gradio UI over the HTTP API (README, "Using the UI"): ``python -m ui.app --api http://127.0.0.1:8000``.

It only talks HTTP to the API, so it works the same against ``make run`` on a laptop and
against a Serve cluster behind a load balancer.
"""

from __future__ import annotations

import argparse
import html
import uuid
from dataclasses import dataclass, field

import gradio as gr
import httpx

SEP = " — "  # between title and artist in the song box's choices


@dataclass
class Answer:
    """What the UI shows for one API call: a message (empty when all went well) and the body."""

    status: int
    body: dict | list | None
    message: str = ""


class Api:
    """A small client of the Segue HTTP API with errors turned into sentences."""

    def __init__(self, base_url: str, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client or httpx.Client(base_url=self.base_url, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs) -> Answer:
        try:
            r = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            return Answer(
                0,
                None,
                f"The recommendation service at {self.base_url} is not reachable "
                f"({type(exc).__name__}). Is it running?",
            )
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code == 503:
            return Answer(503, body, "The service is starting or switching models; try again in a few seconds.")
        if r.status_code >= 500:
            return Answer(r.status_code, body, f"The service failed (HTTP {r.status_code}); try again later.")
        if r.status_code == 422:
            detail = body.get("detail") if isinstance(body, dict) else None
            return Answer(422, body, f"Please check the input: {detail or 'invalid request'}.")
        return Answer(r.status_code, body)

    def search(self, query: str, limit: int = 10) -> Answer:
        return self._call("GET", "/songs/search", params={"q": query, "limit": limit})

    def recommend(self, body: dict) -> Answer:
        return self._call("POST", "/recommend", json=body)

    def feedback(self, request_id: str, track_id: str, signal: str, user_id: str | None) -> Answer:
        body = {"request_id": request_id, "track_id": track_id, "signal": signal}
        if user_id:
            body["user_id"] = user_id
        answer = self._call("POST", "/feedback", json=body)
        if answer.status == 429:
            answer.message = "Too many ratings at once; wait a second."
        elif answer.status == 503 and isinstance(answer.body, dict) and answer.body.get("detail"):
            answer.message = f"Your rating was not recorded: {answer.body['detail']}."
        return answer


def song_choice(s: dict) -> str:
    return f"{s['song']}{SEP}{s['artist']}"


def split_choice(value: str | None, artist: str | None) -> tuple[str, str | None]:
    """A picked ``title — artist`` choice, or what was typed with the artist box."""
    value = (value or "").strip()
    if SEP in value:
        title, _, by = value.rpartition(SEP)
        return title.strip(), by.strip()
    return value, (artist or "").strip() or None


def score_bar(r: dict) -> tuple[str, str]:
    """A result's score drawn as its two parts (``cb_part`` blue, ``cf_part`` orange: together the
    bar is the score, 60 px for 1.0) and the parts in words, with the raw similarities they came
    from; a popularity answer (no parts) gets no bar."""
    cb_part, cf_part = r.get("cb_part"), r.get("cf_part")
    if cb_part is None or cf_part is None:
        return "", "popular"
    cb_part, cf_part = max(cb_part, 0.0), max(cf_part, 0.0)
    bar = (
        f'<div class="segue-bar" role="img" aria-label="content part {cb_part:.2f}, collaborative part {cf_part:.2f}">'
        f'<span style="display:inline-block;height:8px;width:{60 * min(cb_part, 1):.0f}px;background:#3b82f6"></span>'
        f'<span style="display:inline-block;height:8px;width:{60 * min(cf_part, 1):.0f}px;background:#f59e0b"></span>'
        f"</div>"
    )
    words = (
        f"CB {cb_part:.2f} + CF {cf_part:.2f} (similarity {r.get('cb_score', 0.0):.2f} / {r.get('cf_score', 0.0):.2f})"
    )
    return bar, words


def results_table(recs: list[dict]) -> str:
    """The results as an accessible HTML table: score with its CB and CF parts, the reason,
    an audio preview where there is one."""
    if not recs:
        return "<p>No songs to recommend for this query.</p>"
    rows = []
    for i, r in enumerate(recs, 1):
        bar, parts = score_bar(r)
        preview = (
            f'<audio controls preload="none" src="{html.escape(r["preview_url"])}" '
            f'data-track="{html.escape(r.get("track_id", ""))}" '
            f'aria-label="preview of {html.escape(r["song"])}"></audio>'
            if r.get("preview_url")
            else ""
        )
        rows.append(
            f"<tr><td>{i}</td><td>{html.escape(r['song'])}</td><td>{html.escape(r['artist'])}</td>"
            f"<td>{r.get('score', 0):.3f}{bar}<small>{parts}</small></td>"
            f"<td>{html.escape(r.get('because', ''))}</td><td>{preview}</td></tr>"
        )
    return (
        '<table class="segue-results"><caption>Recommended songs</caption><thead><tr><th scope="col">#</th>'
        '<th scope="col">Song</th><th scope="col">Artist</th><th scope="col">Score (CB blue, CF orange)</th>'
        '<th scope="col">Why</th><th scope="col">Preview</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
    )


def autocomplete(api: Api, text: str | None) -> list[str] | None:
    """``title — artist`` choices for what was typed (None: leave the list as it is)."""
    text = (text or "").strip()
    if len(text) < 2 or SEP in text:
        return None
    found = api.search(text)
    if found.message or not isinstance(found.body, list):
        return None
    return [song_choice(s) for s in found.body]


@dataclass
class View:
    """What one recommendation shows: a message, "did you mean" choices, the weights line, the table."""

    message: str = ""
    suggestions: list[str] | None = None
    weights: str = ""
    table: str = ""
    shown: dict = field(default_factory=dict)  # request_id, user_id, recs: what feedback refers to


def recommend_view(
    api: Api,
    song_value: str | None,
    artist_value: str | None,
    user_value: str | None,
    w1: float,
    w2: float,
    diversity: float,
    k: float,
) -> View:
    """Ask the API and turn the answer (or the failure) into what the page shows."""
    title, by = split_choice(song_value, artist_value)
    body: dict = {"k": int(k), "w1": w1, "w2": w2, "diversity": diversity}
    if title:
        body.update(song=title, artist=by)
    if user_value and user_value.strip():
        body["user_id"] = user_value.strip()
    if "song" not in body and "user_id" not in body:
        return View("Type a song (or a user id) first.")
    if w1 == 0 and w2 == 0:
        return View("At least one of the two weights must be above 0.")
    answer = api.recommend(body)
    if answer.status == 404 and isinstance(answer.body, dict):
        options = [song_choice(s) for s in answer.body.get("suggestions", [])]
        asked = f"{title!r}" + (f" by {by!r}" if by else "")
        if "equally well" in answer.body.get("detail", ""):
            return View(f"{len(options)} songs match {asked}. Which one do you mean?", options)
        text = f"We could not find {asked}."
        return View(text + (" Did you mean one of these?" if options else " Try another spelling."), options)
    if answer.message:
        return View(answer.message)
    used = answer.body["weights_used"]
    weights = f"**Weights used:** content {used['w1']:.2f}, collaborative {used['w2']:.2f} — {used['reason']}"
    seeds = answer.body["query"].get("seeds") or []
    if seeds:  # the song the answer is for, named where the results are: never only implied
        weights = "**Songs like:** " + ", ".join(html.escape(song_choice(s)) for s in seeds) + "  \n" + weights
    recs = answer.body["recommendations"]
    shown = {
        "request_id": answer.body["request_id"],
        "user_id": body.get("user_id"),
        "recs": [{"track_id": r["track_id"], "song": r["song"], "artist": r["artist"]} for r in recs],
    }
    return View("", None, weights, results_table(recs), shown)


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
        "dislike": f"Noted: {name} will not come back in this session.",
        "play": f"Playing {name}.",
    }[signal]


PLAY_JS = """
() => document.addEventListener('play', (e) => {
  const track = e.target && e.target.dataset ? e.target.dataset.track : null;
  const box = document.querySelector('#segue-played textarea, #segue-played input');
  const send = document.querySelector('#segue-played-send');
  if (!track || !box || !send) return;
  box.value = track;
  box.dispatchEvent(new Event('input', {bubbles: true}));
  setTimeout(() => send.click(), 50);
}, true)
"""


def launch_options() -> dict:
    """What ``launch()`` needs besides the address: the script that reports preview plays."""
    return {"js": PLAY_JS}


def build(api: Api) -> gr.Blocks:
    """The Blocks app: song box with autocomplete, sliders that re-rank as they move."""
    with gr.Blocks(title="Segue") as demo:
        gr.Markdown("# Segue\nName a song you like; get songs to play next, each with the reason.")
        with gr.Row():
            song = gr.Dropdown(
                label="Song",
                choices=[],
                value=None,
                allow_custom_value=True,
                filterable=True,
                info="Type a title, then pick it from the list",
            )
            artist = gr.Textbox(label="Artist (optional)")
            user = gr.Textbox(label="User id (optional: recommendations from that listener's history)")
        with gr.Row():
            w1 = gr.Slider(0, 1, value=0.3, step=0.05, label="Content weight w1 (tags, genre, sound)")
            w2 = gr.Slider(0, 1, value=0.7, step=0.05, label="Collaborative weight w2 (what listeners also play)")
            diversity = gr.Slider(0, 1, value=0.0, step=0.1, label="Diversity (fewer songs per artist, more variety)")
            k = gr.Slider(1, 50, value=10, step=1, label="How many songs")
        go = gr.Button("Recommend", variant="primary")
        message = gr.Markdown(elem_id="segue-message")
        suggestions = gr.Radio(label="Did you mean", choices=[], visible=False, elem_id="segue-suggestions")
        weights_used = gr.Markdown(elem_id="segue-weights")
        results = gr.HTML(elem_id="segue-results")
        shown = gr.State({})
        listener = gr.State(None)  # this browser session's listener id, when no user id is typed
        played = gr.Textbox(visible="hidden", elem_id="segue-played", label="played preview")
        played_send = gr.Button("played", visible="hidden", elem_id="segue-played-send")

        def recommend(song_v, artist_v, user_v, *rest):
            """A song query names this session's listener (for feedback and its dislikes)."""
            session = rest[-1]
            user_v = (user_v or "").strip() or (session if (song_v or "").strip() else None)
            view = recommend_view(api, song_v, artist_v, user_v, *rest[:-1])
            picks = gr.update(choices=view.suggestions or [], value=None, visible=bool(view.suggestions))
            return view.message, picks, view.weights, view.table, view.shown

        def complete(key: gr.KeyUpData):
            # the box's value only changes on a pick or on blur: what is typed comes with the key-up
            # (trigger_mode "multiple" below: with "always_last" Gradio re-sends a stale text)
            choices = autocomplete(api, key.input_value)
            return gr.update() if choices is None else gr.update(choices=choices)

        inputs = [song, artist, user, w1, w2, diversity, k, listener]
        outputs = [message, suggestions, weights_used, results, shown]
        demo.load(lambda: f"ui-{uuid.uuid4().hex[:12]}", None, listener)
        song.key_up(complete, None, song, show_progress="hidden", trigger_mode="multiple")
        go.click(recommend, inputs, outputs)
        song.select(recommend, inputs, outputs)
        for slider in (w1, w2, diversity, k):
            slider.release(recommend, inputs, outputs, show_progress="hidden")
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
                gr.Markdown("**Rate these songs** — a thumbs-down takes the song off your list for this session.")
                for i, rec in enumerate(recs, 1):
                    with gr.Row(equal_height=True):
                        gr.Markdown(f"{i}. {html.escape(rec['song'])} — {html.escape(rec['artist'])}")
                        like = gr.Button(
                            "👍 Like", size="sm", min_width=80, elem_id=f"segue-like-{i}", elem_classes="segue-like"
                        )
                        dislike = gr.Button(
                            "👎 Dislike",
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

"""The Segue tab: a playlist from one song to another (``POST /segue``), or a continuation of one
song when "to" is empty, shown in path order with each step's similarity drawn as a bar."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from ui.client import Api
from ui.render import bar, preview, table
from ui.songs import asked_text, did_you_mean, song_box, song_choice, split_choice

STEP_COLOR = "#8b5cf6"  # a step's blended similarity


def segue_body(from_value: str | None, to_value: str | None, length: float) -> dict | None:
    """The ``/segue`` request for the tab's boxes (a picked ``title — artist`` or a typed title);
    without a "to" song it asks for a continuation; None without a "from" song."""
    start, start_by = split_choice(from_value, None)
    if not start:
        return None
    body: dict = {"from": {"song": start, "artist": start_by}, "length": int(length)}
    end, end_by = split_choice(to_value, None)
    if end:
        body["to"] = {"song": end, "artist": end_by}
    return body


def step_cell(step: dict) -> str:
    """The step into a song: its blended similarity as a number and a bar, the raw content and
    collaborative similarities and the closeness to the last song; "start" for the first song."""
    similarity = step.get("similarity")
    if similarity is None:
        return "start"
    toward = "" if step.get("toward") is None else f", to the last song {step['toward']:.2f}"
    raw = f"CB {step.get('cb_score') or 0.0:.2f} / CF {step.get('cf_score') or 0.0:.2f}{toward}"
    return f"{similarity:.3f}{bar([(similarity, STEP_COLOR)], f'step similarity {similarity:.2f}')}<small>{raw}</small>"


def segue_table(path: list[dict]) -> str:
    """The path as an accessible table, first song first."""
    rows = [
        [
            str(i),
            html.escape(step["song"]),
            html.escape(step["artist"]),
            step_cell(step),
            html.escape(step.get("because", "")),
            preview(step),
        ]
        for i, step in enumerate(path, 1)
    ]
    return table("Segue path", ["#", "Song", "Artist", "Step similarity", "Why", "Preview"], rows, "segue-path")


def segue_summary(answer: dict) -> str:
    """The lines above the path: what it goes from and to, whether it kept every rule (and the
    API's reason), and the path at a glance."""
    seeds = [html.escape(song_choice(s)) for s in answer["query"]["seeds"]]
    n = len(answer["path"])
    what = (
        f"**Segue** from {seeds[0]} to {seeds[1]}: {n} songs"
        if len(seeds) > 1
        else f"**Continuation** of {seeds[0]}: {n} songs"
    )
    kept = "Complete" if answer["complete"] else "Not complete"
    s = answer["summary"]
    glance = f"**Steps:** mean similarity {s['mean_similarity']:.2f}, weakest {s['min_similarity']:.2f}"
    if s.get("progress") is not None:
        glance += f"; {100 * s['progress']:.0f} % of steps get closer to the last song"
    glance += f"; {s['artists']} artists"
    return f"{what}  \n**{kept}:** {html.escape(answer['reason'])}  \n{glance}"


@dataclass
class SegueView:
    """What one segue shows: a message, "did you mean" choices for the ``box`` they belong to,
    the summary and the path."""

    message: str = ""
    suggestions: list[str] | None = None
    box: str = "from"
    summary: str = ""
    table: str = ""


def segue_view(api: Api, from_value: str | None, to_value: str | None, length: float) -> SegueView:
    """Ask the API for the segue and turn the answer (or the failure) into what the tab shows."""
    body = segue_body(from_value, to_value, length)
    if body is None:
        return SegueView("Pick a song to start from.")
    answer = api.segue(body)
    if answer.status == 404 and isinstance(answer.body, dict):
        box = "to" if answer.body.get("field") == "to" else "from"  # the API names the box it could not find
        message, options = did_you_mean(answer.body, asked_text(body[box]["song"], body[box]["artist"]))
        return SegueView(message, options, box)
    if answer.message:
        return SegueView(answer.message)
    return SegueView(summary=segue_summary(answer.body), table=segue_table(answer.body["path"]))


def segue_tab(api: Api) -> None:
    """The tab's controls and their events (called inside ``gr.Tab``)."""
    with gr.Row():
        start = song_box(api, "From", "Type a title, then pick it from the list")
        end = song_box(api, "To (optional)", "Leave empty for a continuation of the first song")
    length = gr.Slider(2, 50, value=12, step=1, label="Length (songs, the first and last included)")
    go = gr.Button("Make the segue", variant="primary")
    message = gr.Markdown(elem_id="segue-path-message")
    suggestions = gr.Radio(label="Did you mean", choices=[], visible=False, elem_id="segue-path-suggestions")
    summary = gr.Markdown(elem_id="segue-path-summary")
    path = gr.HTML(elem_id="segue-path")
    box = gr.State("from")  # the box the "did you mean" choices are for

    def run(from_value, to_value, n):
        view = segue_view(api, from_value, to_value, n)
        picks = gr.update(choices=view.suggestions or [], value=None, visible=bool(view.suggestions))
        return view.message, picks, view.box, view.summary, view.table

    def pick(picked, which, from_value, to_value):
        return (picked, to_value) if which == "from" else (from_value, picked)

    inputs, outputs = [start, end, length], [message, suggestions, box, summary, path]
    go.click(run, inputs, outputs)
    length.release(run, inputs, outputs, show_progress="hidden")
    suggestions.select(pick, [suggestions, box, start, end], [start, end]).then(run, inputs, outputs)

"""The HTML the tabs show: bars for scores, audio previews and the accessible results table.
Every text from the API is escaped here or by the caller before it reaches the page."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

BAR_PX = 60  # a bar's width for 1.0
CB_COLOR, CF_COLOR = "#3b82f6", "#f59e0b"  # content blue, collaborative orange


def bar(parts: Sequence[tuple[float, str]], label: str) -> str:
    """A bar of coloured ``(value, colour)`` parts side by side (each clipped to [0, 1]; 60 px
    for 1.0), with ``label`` as what a screen reader says of it."""
    spans = "".join(
        f'<span style="display:inline-block;height:8px;width:{BAR_PX * min(max(value, 0.0), 1.0):.0f}px;'
        f'background:{color}"></span>'
        for value, color in parts
    )
    return f'<div class="segue-bar" role="img" aria-label="{html.escape(label)}">{spans}</div>'


def preview(r: dict) -> str:
    """The song's audio preview player ('' when the catalog has none); ``data-track`` names the
    song for the script that reports plays."""
    if not r.get("preview_url"):
        return ""
    return (
        f'<audio controls preload="none" src="{html.escape(r["preview_url"])}" '
        f'data-track="{html.escape(r.get("track_id", ""))}" '
        f'aria-label="preview of {html.escape(r["song"])}"></audio>'
    )


def table(caption: str, headers: Sequence[str], rows: Iterable[Sequence[str]], css_class: str) -> str:
    """An HTML table with a caption and column headers; the cells are HTML (escaped by the caller)."""
    head = "".join(f'<th scope="col">{h}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return (
        f'<table class="{css_class}"><caption>{caption}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def score_bar(r: dict) -> tuple[str, str]:
    """A result's score drawn as its two parts (``cb_part`` blue, ``cf_part`` orange: together the
    bar is the score) and the parts in words, with the raw similarities they came from; a
    popularity answer (no parts) gets no bar."""
    cb_part, cf_part = r.get("cb_part"), r.get("cf_part")
    if cb_part is None or cf_part is None:
        return "", "popular"
    cb_part, cf_part = max(cb_part, 0.0), max(cf_part, 0.0)
    drawn = bar(
        [(cb_part, CB_COLOR), (cf_part, CF_COLOR)],
        f"content part {cb_part:.2f}, collaborative part {cf_part:.2f}",
    )
    words = (
        f"CB {cb_part:.2f} + CF {cf_part:.2f} (similarity {r.get('cb_score', 0.0):.2f} / {r.get('cf_score', 0.0):.2f})"
    )
    return drawn, words


def rate_buttons(r: dict) -> str:
    """The result's 👍 and 👎 buttons; ``data-track`` and ``data-signal`` tell the page's script
    (``ui/app.py``, ``PAGE_JS``) what to send. Plain HTML in the table, not Gradio buttons, so a
    click never names an event handler of a list that has since been replaced."""
    track, song = html.escape(r.get("track_id", "")), html.escape(r["song"])
    return (
        f'<button type="button" class="segue-rate" data-track="{track}" data-signal="like" '
        f'aria-label="Like {song}">👍</button> '
        f'<button type="button" class="segue-rate" data-track="{track}" data-signal="dislike" '
        f'aria-label="Less like {song}">👎</button>'
    )


def results_table(recs: list[dict]) -> str:
    """The recommendations: score with its CB and CF parts, the reason, a preview where there is
    one, and the buttons that rate the song."""
    if not recs:
        return "<p>No songs to recommend for this query.</p>"
    rows = []
    for i, r in enumerate(recs, 1):
        drawn, parts = score_bar(r)
        rows.append(
            [
                str(i),
                html.escape(r["song"]),
                html.escape(r["artist"]),
                f"{r.get('score', 0):.3f}{drawn}<small>{parts}</small>",
                html.escape(r.get("because", "")),
                preview(r),
                rate_buttons(r),
            ]
        )
    headers = ["#", "Song", "Artist", "Score (CB blue, CF orange)", "Why", "Preview", "Rate"]
    return table("Recommended songs", headers, rows, "segue-results") + (
        "<p><strong>Rate these songs</strong>: 👎 means <em>less like this</em>: it drops the song and "
        "pushes similar ones down for this session.</p>"
    )

"""The main tab's filters: tempo, year and energy ranges and genres, as controls and as the
``filters`` of a ``/recommend`` body. Only what the listener set is sent: a slider left at its
end of the scale (its default) is an open end, so a range whose two sliders are left alone,
and an empty genres box, filter nothing."""

from __future__ import annotations

import gradio as gr

# field: (label, the scale's low end, its high end, step), in filters_body's order
RANGES = {
    "tempo": ("Tempo (BPM)", 0, 250, 1),
    "year": ("Year", 1900, 2030, 1),
    "energy": ("Energy", 0.0, 1.0, 0.05),
}


def filters_body(
    tempo_lo: float | None,
    tempo_hi: float | None,
    year_lo: float | None,
    year_hi: float | None,
    energy_lo: float | None,
    energy_hi: float | None,
    genres: str | None,
) -> dict | None:
    """The request's ``filters`` for the controls' values (None when nothing is set): an end at
    its scale's end is open (``null``); ``genres`` is comma-separated text, any of which a song may have."""
    ends = {"tempo": (tempo_lo, tempo_hi), "year": (year_lo, year_hi), "energy": (energy_lo, energy_hi)}
    filters: dict = {}
    for name, (lo, hi) in ends.items():
        _, low, high, _ = RANGES[name]
        bound = [None if lo is None or lo <= low else lo, None if hi is None or hi >= high else hi]
        if bound != [None, None]:
            filters[name] = bound
    names = [g.strip() for g in (genres or "").split(",") if g.strip()]
    if names:
        filters["genres"] = names
    return filters or None


def filter_controls() -> tuple[list[gr.Slider], gr.Textbox]:
    """The filter sliders (``from`` and ``to`` of each range, in :func:`filters_body`'s order)
    and the genres box, in a closed accordion."""
    sliders: list[gr.Slider] = []
    with gr.Accordion("Filters: tempo, year, energy, genres (left as they are: no filter)", open=False):
        with gr.Row():
            for label, low, high, step in RANGES.values():
                with gr.Column(min_width=200):
                    sliders.append(gr.Slider(low, high, value=low, step=step, label=f"{label} from"))
                    sliders.append(gr.Slider(low, high, value=high, step=step, label=f"{label} to"))
        genres = gr.Textbox(label="Genres (comma-separated: any of them)", placeholder="Rock, Electronic")
    return sliders, genres

"""Naming songs, shared by every tab: the ``title — artist`` choices, the song box with its
autocomplete, and the "did you mean" sentence for a song the API does not know."""

from __future__ import annotations

import gradio as gr

from ui.client import Api

SEP = " — "  # between title and artist in the song box's choices


def song_choice(s: dict) -> str:
    """A song of an API answer as the song box lists it: ``title — artist``."""
    return f"{s['song']}{SEP}{s['artist']}"


def split_choice(value: str | None, artist: str | None) -> tuple[str, str | None]:
    """A picked ``title — artist`` choice, or what was typed with the artist box."""
    value = (value or "").strip()
    if SEP in value:
        title, _, by = value.rpartition(SEP)
        return title.strip(), by.strip()
    return value, (artist or "").strip() or None


def asked_text(title: str, by: str | None) -> str:
    """A song as the listener named it, for sentences: ``'title' by 'artist'``."""
    return f"{title!r}" + (f" by {by!r}" if by else "")


def autocomplete(api: Api, text: str | None) -> list[str] | None:
    """``title — artist`` choices for what was typed (None: leave the list as it is)."""
    text = (text or "").strip()
    if len(text) < 2 or SEP in text:
        return None
    found = api.search(text)
    if found.message or not isinstance(found.body, list):
        return None
    return [song_choice(s) for s in found.body]


def did_you_mean(body: dict, asked: str) -> tuple[str, list[str]]:
    """The sentence and the choices for a 404 about ``asked``: a song the catalog does not know
    (did you mean) or a title several songs share equally well (which one)."""
    options = [song_choice(s) for s in body.get("suggestions", [])]
    if "equally well" in body.get("detail", ""):
        return f"{len(options)} songs match {asked}. Which one do you mean?", options
    text = f"We could not find {asked}."
    return text + (" Did you mean one of these?" if options else " Try another spelling."), options


def song_box(api: Api, label: str, info: str) -> gr.Dropdown:
    """A song box that lists ``title — artist`` choices from the catalog as the listener types."""
    box = gr.Dropdown(label=label, choices=[], value=None, allow_custom_value=True, filterable=True, info=info)

    def complete(key: gr.KeyUpData):
        # the box's value only changes on a pick or on blur: what is typed comes with the key-up
        # (trigger_mode "multiple": with "always_last" Gradio re-sends a stale text)
        choices = autocomplete(api, key.input_value)
        return gr.update() if choices is None else gr.update(choices=choices)

    box.key_up(complete, None, box, show_progress="hidden", trigger_mode="multiple")
    return box

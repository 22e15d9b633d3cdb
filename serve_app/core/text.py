"""Text normalisation shared by catalog de-duplication and song lookup."""

from __future__ import annotations

import re
import unicodedata

_NOT_WORD = re.compile(r"[^\w]+", re.UNICODE)


def normalize(text: str) -> str:
    """Fold case, accents, punctuation and whitespace: ``"Björk  - Jóga!"`` -> ``"bjork joga"``.

    Two strings that a listener would call the same title or artist map to the same key.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    no_accents = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(_NOT_WORD.sub(" ", no_accents.casefold()).replace("_", " ").split())


def song_key(name: str, artist: str) -> str:
    """Identity of a song for look-ups: normalised name and artist (same name, two artists = two songs)."""
    return f"{normalize(name)}\x1f{normalize(artist)}"

"""Song lookup: every rung of ``resolve`` (track id, exact, normalised, loose, fuzzy, unknown),
``search`` ordering, garbage input that must never raise, and the real catalog sample."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import get_args

import numpy as np
import pandas as pd
import pytest

from serve_app.core.lookup import (
    FUZZY_THRESHOLD,
    MAX_ALTERNATIVES,
    MIN_PREFIX_WORDS,
    Candidate,
    How,
    Match,
    SongIndex,
)
from serve_app.core.text import normalize, song_key

# (name, artist, plays); row i = track i, most played first like a bundle's catalog.
SONGS = [
    ("Mr. Brightside", "The Killers", 900),
    ("Jolene", "Dolly Parton & Friends", 880),  # more played than the plain credit below
    ("Hurt", "Johnny Cash", 800),  # three songs called "Hurt"
    ("Jóga", "Björk", 700),
    ("Ace of Spades", "Motörhead", 650),
    ("Stay (feat. Mikky Ekko)", "Rihanna", 600),
    ("Love Story", "Taylor Swift", 580),  # "Love" is a prefix of it
    ("Love", "Lana Del Rey", 550),
    ("Hurt", "Nine Inch Nails", 500),
    ("Get Lucky", "Daft Punk feat. Pharrell Williams", 450),
    ("Yellow", "Coldplay", 400),
    ("Naïve", "The Kooks", 350),
    ("Sunflower", "Post Malone & Swae Lee", 320),
    ("Mrs. Robinson", "Simon & Garfunkel", 300),
    ("Dancing with Myself", "Billy Idol", 250),
    ("Paranoid", "Black Sabbath", 200),
    ("Dixie Chicken", "Little Feat", 180),  # a band name, not a credit
    ("Sunflower", "Post Malone feat. Someone", 150),
    ("Hurt", "Christina Aguilera", 100),
    ("Jolene", "Dolly Parton", 40),
    ("!!!", "!!!", 30),
]
ROW = {(n, a): i for i, (n, a, _) in enumerate(SONGS)}
BRIGHTSIDE = ROW["Mr. Brightside", "The Killers"]
HURT_CASH, HURT_NIN, HURT_XTINA = (ROW["Hurt", a] for a in ("Johnny Cash", "Nine Inch Nails", "Christina Aguilera"))
JOGA, STAY = ROW["Jóga", "Björk"], ROW["Stay (feat. Mikky Ekko)", "Rihanna"]
GET_LUCKY, DANCING = ROW["Get Lucky", "Daft Punk feat. Pharrell Williams"], ROW["Dancing with Myself", "Billy Idol"]
SYMBOLS = ROW["!!!", "!!!"]
ALIAS_ID = "TRZZZZZZZZZZZZZZZZ"
HOWS = set(get_args(How))


def _track_id(row: int) -> str:
    return f"TR{row:016d}"


def _catalog() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "track_id": [_track_id(i) for i in range(len(SONGS))],
            "name": [n for n, _, _ in SONGS],
            "artist": [a for _, a, _ in SONGS],
            "plays": [p for _, _, p in SONGS],
            "listeners": [p // 3 for _, _, p in SONGS],
        }
    )


@pytest.fixture(scope="module")
def index() -> SongIndex:
    aliases = pd.DataFrame({"alias_track_id": [ALIAS_ID], "track_id": [_track_id(JOGA)], "track": [JOGA]})
    return SongIndex.build(_catalog(), aliases)


def _rows(candidates: list[Candidate]) -> list[int]:
    return [c.track for c in candidates]


# --- exact and normalised ---------------------------------------------------------------


def test_exact_name_and_artist(index):
    m = index.resolve("Mr. Brightside", "The Killers")
    assert m == Match(BRIGHTSIDE, "exact", 100.0, [], [])


@pytest.mark.parametrize(
    "name, artist, row",
    [
        ("mr brightside", "the killers", BRIGHTSIDE),
        ("  MR. BRIGHTSIDE ", "The   Killers!", BRIGHTSIDE),
        ("Ace of Spades", "MOTORHEAD", ROW["Ace of Spades", "Motörhead"]),
        ("joga", "bjork", JOGA),
        ("JÓGA!!", "björk", JOGA),
        ("Naive", "the kooks", ROW["Naïve", "The Kooks"]),
    ],
)
def test_case_accents_punctuation_and_whitespace(index, name, artist, row):
    m = index.resolve(name, artist)
    assert (m.track, m.how, m.score, m.suggestions) == (row, "normalized", 100.0, [])


@pytest.mark.parametrize(
    "name, artist, row",
    [
        ("Mr. Brightside", "Killers", BRIGHTSIDE),
        ("Naïve", "Kooks", ROW["Naïve", "The Kooks"]),
        ("Paranoid", "The Black Sabbath", ROW["Paranoid", "Black Sabbath"]),
    ],
)
def test_leading_the_is_optional(index, name, artist, row):
    m = index.resolve(name, artist)
    assert (m.track, m.how) == (row, "normalized")


# --- feat. credits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Stay",
        "Stay (feat. Mikky Ekko)",
        "stay feat mikky ekko",
        "Stay ft. Mikky Ekko",
        "Stay featuring Mikky Ekko",
        "Stay [feat. Someone Else]",
        "Stay (with Mikky Ekko)",
        "Stay - feat. Mikky Ekko",
    ],
)
def test_feat_in_title_is_ignored(index, name):
    assert index.resolve(name, "Rihanna").track == STAY
    assert index.resolve(name).track == STAY


@pytest.mark.parametrize(
    "name, artist, row",
    [
        ("Mr. Brightside (feat. Nobody)", "The Killers", BRIGHTSIDE),  # catalog has the plain title
        ("Mr. Brightside", "The Killers feat. Someone", BRIGHTSIDE),  # catalog has the plain artist
        ("Mr. Brightside", "The Killers ft. Someone", BRIGHTSIDE),
        ("Mr. Brightside", "Killers & Friends", BRIGHTSIDE),
        ("Mr. Brightside", "The Killers, Someone", BRIGHTSIDE),
        ("Get Lucky", "Daft Punk", GET_LUCKY),  # catalog credit has the feat.
        ("Get Lucky", "Daft Punk featuring Pharrell Williams", GET_LUCKY),
        ("Mrs. Robinson", "Simon", ROW["Mrs. Robinson", "Simon & Garfunkel"]),
        ("Mrs Robinson", "Simon and Garfunkel", ROW["Mrs. Robinson", "Simon & Garfunkel"]),  # via "Simon"
    ],
)
def test_feat_and_multi_artist_credits(index, name, artist, row):
    m = index.resolve(name, artist)
    assert (m.track, m.how) == (row, "normalized")


def test_plain_credit_wins_over_a_more_played_multi_artist_credit(index):
    assert index.resolve("Jolene", "Dolly Parton").track == ROW["Jolene", "Dolly Parton"]
    assert index.resolve("Jolene", "The Dolly Parton").track == ROW["Jolene", "Dolly Parton"]
    assert index.resolve("Jolene", "Dolly Parton & Friends").track == ROW["Jolene", "Dolly Parton & Friends"]


def test_first_artist_shared_by_two_credits_is_ambiguous(index):
    """Neither credit is the artist given: "did you mean" with both, most played first, no guess."""
    m = index.resolve("Sunflower", "Post Malone")
    assert (m.track, m.how) == (None, "ambiguous")
    assert _rows(m.suggestions) == [
        ROW["Sunflower", "Post Malone & Swae Lee"],
        ROW["Sunflower", "Post Malone feat. Someone"],
    ]


def test_feat_at_the_end_of_a_name_is_not_a_credit(index):
    assert index.resolve("Dixie Chicken", "Little").track is None
    assert index.resolve("dixie chicken", "little feat").track == ROW["Dixie Chicken", "Little Feat"]


def test_with_outside_brackets_is_part_of_the_title(index):
    m = index.resolve("Dancing", "Billy Idol")
    assert m.track is None and m.how == "unknown"
    assert m.suggestions[0].track == DANCING


# --- artist omitted -----------------------------------------------------------------------


def test_a_title_several_artists_share_asks_which_one(index):
    """Without an artist that separates them, songs of one title match equally well: the
    answer is "did you mean", most played first, never the most played taken silently."""
    m = index.resolve("Hurt")
    assert (m.track, m.how, m.score) == (None, "ambiguous", 0.0)
    assert _rows(m.suggestions) == [HURT_CASH, HURT_NIN, HURT_XTINA]
    assert [(c.artist, c.plays) for c in m.suggestions] == [
        ("Johnny Cash", 800),
        ("Nine Inch Nails", 500),
        ("Christina Aguilera", 100),
    ]
    assert index.resolve("HURT", None).how == "ambiguous"


@pytest.mark.parametrize("artist", [None, "", "   ", "\t\n"])
def test_blank_artist_counts_as_omitted(index, artist):
    m = index.resolve("Hurt", artist)
    assert m.track is None and _rows(m.suggestions) == [HURT_CASH, HURT_NIN, HURT_XTINA]


def test_all_symbol_titles_and_artists_are_still_found(index):
    """``normalize`` leaves nothing of "!!!" (a real band) or "#####", so they match case-folded."""
    assert index.resolve("!!!", "!!!").track == SYMBOLS
    assert index.resolve(" !!! ").track == SYMBOLS
    assert index.search("!!")[0].track == SYMBOLS
    assert index.resolve("Hurt", "!!!").track is None  # an artist, not a blank


def test_given_artist_selects_a_less_played_song_and_lists_the_other_versions(index):
    m = index.resolve("hurt", "nine inch nails")
    assert (m.track, _rows(m.alternatives)) == (HURT_NIN, [HURT_CASH, HURT_XTINA])


def test_ordering_comes_from_plays_not_row_order():
    shuffled = _catalog().sample(frac=1.0, random_state=7).reset_index(drop=True)
    index = SongIndex.build(shuffled)
    m = index.resolve("Hurt")
    assert [shuffled.loc[c.track, "artist"] for c in m.suggestions][0] == "Johnny Cash"
    assert [c.plays for c in m.suggestions] == [800, 500, 100]
    assert [c.plays for c in index.search("hurt")] == [800, 500, 100]


# --- typos ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, artist, row",
    [
        ("Mr Brightsde", "The Killers", BRIGHTSIDE),
        ("Mr. Brightside", "The Kilers", BRIGHTSIDE),
        ("Mr Brightsde", "The Kilers", BRIGHTSIDE),
        ("mr brihgtside", "killers", BRIGHTSIDE),
        ("Ace of Spdes", "Motorhed", ROW["Ace of Spades", "Motörhead"]),
        ("Mr Brightsde", None, BRIGHTSIDE),
        ("Mrs Robinsin", "Simon & Garfunkle", ROW["Mrs. Robinson", "Simon & Garfunkel"]),
    ],
)
def test_typos_resolve_fuzzily(index, name, artist, row):
    m = index.resolve(name, artist)
    assert (m.track, m.how, m.suggestions) == (row, "fuzzy", [])
    assert FUZZY_THRESHOLD <= m.score < 100.0


@pytest.mark.parametrize(
    "name, artist",
    [
        ("Mellow", "Coldplay"),  # one letter off a 6-letter title: 83 < 85
        ("Hurt", "Coldplay"),  # right title, wrong artist
        ("Bohemian Rhapsody", "Queen"),
        ("Wonderwall", None),
        ("Stairway to Heaven", "Led Zeppelin"),
        ("Paranoid", "Blur"),
    ],
)
def test_unrelated_strings_do_not_resolve(index, name, artist):
    m = index.resolve(name, artist)
    assert (m.track, m.how, m.score, m.alternatives) == (None, "unknown", 0.0, [])


def test_unknown_suggests_did_you_mean_candidates(index):
    m = index.resolve("Mellow", "Coldplay")
    assert m.suggestions[0].track == ROW["Yellow", "Coldplay"]
    hurt = index.resolve("Hurt", "Coldplay")
    assert set(_rows(hurt.suggestions)[:3]) == {HURT_CASH, HURT_NIN, HURT_XTINA}
    scores = [c.score for c in hurt.suggestions]
    assert scores == sorted(scores, reverse=True)


# --- track ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, row",
    [
        (_track_id(HURT_NIN), HURT_NIN),
        (f"  {_track_id(HURT_NIN).lower()} ", HURT_NIN),
        (ALIAS_ID, JOGA),
    ],
)
def test_track_and_alias_ids(index, text, row):
    assert index.resolve(text) == Match(row, "track_id", 100.0)
    assert index.resolve(text, "Whoever").track == row


def test_unknown_track_id_is_just_unknown(index):
    m = index.resolve("TRQQQQQQQQQQQQQQQQ")
    assert (m.track, m.how, m.suggestions) == (None, "unknown", [])


# --- garbage never raises -------------------------------------------------------------------

NASTY = [
    "",
    " ",
    "\t\n\r",
    "!!!",
    "((((",
    "-",
    "🎵🎶",
    "💩" * 1000,
    "a" * 100_000,
    "\x00",
    "\x1f",
    "\ud800",
    "\u200d\u200b",
    "e\u0301" * 50,
    "Ω≈ç√∫˜µ≤≥÷",
    "مرحبا بالعالم",
    "夜に駆ける",
    "ｆｕｌｌｗｉｄｔｈ",
    "'; DROP TABLE songs; --",
    "%s%n{0}",
    "TR",
    "TR" + "A" * 17,
    "the",
    "feat.",
    "(feat. X)",
    "&",
    "\\",
]


@pytest.mark.parametrize("text", NASTY, ids=range(len(NASTY)))
def test_garbage_never_raises(index, text):
    queries = [(text, None), (text, text), ("Hurt", text), (text, "Björk")]
    for m in (index.resolve(name, artist) for name, artist in queries):
        assert isinstance(m, Match) and m.how in HOWS and 0.0 <= m.score <= 100.0
        assert m.track is None or 0 <= m.track < len(SONGS)
        assert (m.track is None) == (m.how in ("unknown", "ambiguous"))
        assert all(isinstance(c, Candidate) for c in m.alternatives + m.suggestions)
    results = index.search(text)
    assert isinstance(results, list) and len(results) <= 10
    assert len({c.track for c in results}) == len(results)


@pytest.mark.parametrize("text", ["", "???", "🎵🎶", "\x00", "   ", "(feat. X)", "-"])
def test_garbage_has_no_suggestions(index, text):
    assert index.resolve(text) == Match(None, "unknown", 0.0, [], [])


def test_empty_catalog():
    empty = SongIndex.build(pd.DataFrame({"track_id": [], "name": [], "artist": [], "plays": []}))
    assert empty.resolve("Hurt", "Johnny Cash") == Match(None, "unknown", 0.0, [], [])
    assert empty.resolve("Hurt").track is None
    assert empty.search("hurt") == []


# --- search -----------------------------------------------------------------------------------


def test_search_prefix_matches_most_played_first(index):
    """After the song the query names, if it names one: "love" is a title, so it leads."""
    results = index.search("love")
    assert _rows(results)[:2] == [ROW["Love", "Lana Del Rey"], ROW["Love Story", "Taylor Swift"]]
    assert [c.score for c in results[:2]] == [100.0, 100.0]
    assert _rows(index.search("Hurt"))[:3] == [HURT_CASH, HURT_NIN, HURT_XTINA]
    assert _rows(index.search("mr"))[:2] == [BRIGHTSIDE, ROW["Mrs. Robinson", "Simon & Garfunkel"]]


def test_search_normalises_the_query(index):
    assert index.search("JÓG")[0].track == JOGA
    assert index.search("  ace OF spa")[0].track == ROW["Ace of Spades", "Motörhead"]


def test_search_fuzzy_matches_follow_prefix_matches(index):
    results = index.search("love", limit=10)
    prefix, fuzzy = results[:2], results[2:]
    assert all(c.name.lower().startswith("love") for c in prefix)
    assert all(not c.name.lower().startswith("love") for c in fuzzy)
    assert [c.score for c in fuzzy] == sorted((c.score for c in fuzzy), reverse=True)


@pytest.mark.parametrize(
    "query, row",
    [
        ("brightsde", BRIGHTSIDE),  # typo, not a prefix
        ("killers", BRIGHTSIDE),  # artist word
        ("brightside kilers", BRIGHTSIDE),
        ("mr brightside the k", BRIGHTSIDE),  # last word still being typed
        ("love story taylor", ROW["Love Story", "Taylor Swift"]),
        ("nine inch", HURT_NIN),
    ],
)
def test_search_fuzzy(index, query, row):
    assert index.search(query)[0].track == row


def test_search_limit_and_uniqueness(index):
    assert len(index.search("hurt", limit=2)) == 2
    assert index.search("hurt", limit=0) == []
    results = index.search("s", limit=100)
    assert len(results) == len({c.track for c in results})
    assert index.search("zzqxv") == []


def test_results_are_frozen(index):
    with pytest.raises(dataclasses.FrozenInstanceError):
        index.resolve("Hurt").track = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        index.search("hurt")[0].score = 0.0  # type: ignore[misc]


# --- bundle catalogs ------------------------------------------------------------------------


def test_song_key_column_gives_the_same_answers(index):
    """A bundle catalog carries ``song_key``; building from it must not change any answer."""
    cat = _catalog()
    keyed = SongIndex.build(cat.assign(song_key=[song_key(n, a) for n, a in zip(cat["name"], cat["artist"])]))
    queries = [
        ("Hurt", None),
        ("mr brightsde", "kilers"),
        ("Stay", "Rihanna"),
        ("Get Lucky", "Daft Punk"),
        ("Jolene", "The Dolly Parton"),
        ("Mellow", "Coldplay"),
        ("joga", "bjork"),
    ]
    for name, artist in queries:
        assert keyed.resolve(name, artist) == index.resolve(name, artist)
    assert keyed.search("love st") == index.search("love st")


@pytest.fixture(scope="module")
def real_index(shared_data) -> tuple[SongIndex, pd.DataFrame]:
    cat = pd.read_csv(shared_data / "music_info_sample.csv")
    cat["plays"] = np.arange(len(cat), 0, -1)
    return SongIndex.build(cat), cat


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name, artist, expected, how",
    [
        ("Mr. Brightside", "The Killers", ("Mr. Brightside", "The Killers"), "exact"),
        ("mr brightside", "the killers", ("Mr. Brightside", "The Killers"), "normalized"),
        ("Naive", "The Kooks", ("Naïve", "The Kooks"), "normalized"),
        ("Ace of Spades", "MOTORHEAD", ("Ace of Spades", "Motörhead"), "normalized"),
        ("Don't Fear the Reaper", "Blue Oyster Cult", ("(Don't Fear) The Reaper", "Blue Öyster Cult"), "normalized"),
        ("Mr Brightsde", "The Kilers", ("Mr. Brightside", "The Killers"), "fuzzy"),
        ("Wonderwal", None, ("Wonderwall", "Oasis"), "fuzzy"),
        ("wonderwall oasis", None, ("Wonderwall", "Oasis"), "title_artist"),
        ("Oasis Wonderwall", "", ("Wonderwall", "Oasis"), "title_artist"),
        ("mr brightside the killers", None, ("Mr. Brightside", "The Killers"), "title_artist"),
    ],
)
def test_real_sample(real_index, name, artist, expected, how):
    index, cat = real_index
    m = index.resolve(name, artist)
    assert (tuple(cat.loc[m.track, ["name", "artist"]]), m.how) == (expected, how)


@pytest.mark.shared_data
def test_every_real_song_resolves_to_itself(real_index):
    index, cat = real_index
    for row, (tid, name, artist) in enumerate(zip(cat["track_id"], cat["name"], cat["artist"])):
        assert index.resolve(name, artist).track == row, (name, artist)
        assert index.resolve(tid).track == row


@pytest.mark.shared_data
def test_real_sample_search(real_index):
    index, _ = real_index
    assert index.search("wonderwal")[0].name == "Wonderwall"
    assert (index.search("wonderwall oasis")[0].name, index.search("wonderwall oasis")[0].artist) == (
        "Wonderwall",
        "Oasis",
    )
    assert index.search("killers")[0].artist == "The Killers"
    assert index.resolve("Mr. Brightside", "Coldplay").suggestions[0].name == "Mr. Brightside"


# --- the whole demo catalog -----------------------------------------------------------------


FEAT_WORDS = {"feat", "ft", "featuring", "with"}


@pytest.fixture(scope="module")
def demo(bundle):
    return SongIndex.build(bundle.catalog, bundle.aliases)


def test_every_demo_song_is_found_by_its_title_and_by_a_prefix_of_two_words(demo):
    """Each song by its exact title (with its artist where others share the title), and by the
    shortest lower-case start of its title of 2+ words that no other title (with or without its
    "feat." credit) starts with or is."""
    forms = [demo._title_strings(row) for row in range(len(demo.names))]
    shared = Counter(f for row_forms in forms for f in row_forms)
    starts = Counter(
        start
        for row_forms in forms
        for start in {" ".join(f.split()[:n]) for f in row_forms for n in range(MIN_PREFIX_WORDS, len(f.split()) + 1)}
    )
    by_prefix = 0
    for row, (name, artist) in enumerate(zip(demo.names, demo.artists)):
        title_shared = any(shared[f] > 1 for f in forms[row])
        m = demo.resolve(name, artist if title_shared else None)
        assert (m.track, m.how) == (row, "exact"), (name, artist)
        words = normalize(name).split()
        for n in range(MIN_PREFIX_WORDS, len(words) + 1):
            typed = " ".join(words[:n])
            if FEAT_WORDS & set(words[:n]):
                break  # a credit is not part of the title a listener types
            if starts[typed] == 1 and shared[typed] <= 1:
                assert demo.resolve(typed).track == row, (typed, name)
                assert demo.search(typed)[0].track == row  # the song used is the first search result
                by_prefix += 1
                break
    assert by_prefix > len(demo.names) // 2


def test_no_demo_query_resolves_to_a_title_it_merely_contains(demo):
    """A title with a word added before or after it is not a typo of that title."""
    for row in range(len(demo.names)):
        for typed in (f"lonely {demo.names[row]}", f"{demo.names[row]} forever"):
            m = demo.resolve(typed)
            if m.track is not None and m.how != "title_artist":
                title, query = normalize(demo.names[m.track]), normalize(typed)
                assert not (title in query and title != query), (typed, demo.names[m.track], m.how)


def test_a_shared_title_without_an_artist_asks_which_one(demo):
    titles = Counter(normalize(n) for n in demo.names)
    title = next(t for t, count in titles.items() if count > 1)
    m = demo.resolve(title)
    assert (m.track, m.how) == (None, "ambiguous") and len(m.suggestions) == min(titles[title], MAX_ALTERNATIVES)
    assert [c.track for c in demo.search(title, len(m.suggestions))] == [c.track for c in m.suggestions]


def test_title_and_artist_typed_in_one_box(demo):
    titles = Counter(normalize(n) for n in demo.names)
    for row in range(0, len(demo.names), 97):
        name, artist = demo.names[row], demo.artists[row]
        for typed in (f"{name} {artist}", f"{artist} {name}"):
            m = demo.resolve(typed.lower())
            assert m.track == row or (m.how == "ambiguous" and row in [c.track for c in m.suggestions]), typed
        assert titles[normalize(name)] >= 1

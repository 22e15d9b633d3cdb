"""Deterministic synthetic stand-in for the "Million Song Dataset + Spotify + Last.fm" Kaggle files.

Writes ``Music Info.csv`` (song catalog) and ``User Listening History.csv`` (user/track
play counts) with the exact headers and value formats of the public files, so the
preprocessing job, recommender tests and benchmarks can run without the real data.

The data is structured rather than uniform noise, because recommenders only behave
realistically on structured data: songs live in genre clusters that determine their
tags, audio features and era; popularity is Zipf-like with a cold tail nobody plays;
users have one to three taste clusters plus a pull towards globally popular songs.
Names carry the quirks real catalogs have (non-ASCII artists, titles shared between
artists, exact duplicate name+artist rows).

The listening history is generated and written in chunks of users, so memory stays
bounded for any number of plays. Same arguments give byte-identical files.

    python -m jobs.demo_data --out DIR [--songs N] [--plays M] [--seed S] [--users U]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from jobs.catalog import CATALOG_FILE, HISTORY_FILE
from jobs.catalog import COLUMNS as CATALOG_COLUMNS

HISTORY_HEADER = b"track_id,user_id,playcount\n"
PREVIEW_PREFIX = "https://p.scdn.co/mp3-preview/"
PREVIEW_CID = "774b29d4f13844c495f206cafdad9c86"

CHUNK_ROWS = 1_000_000  # interaction rows generated and written per chunk
PROGRESS_EVERY = 10_000_000  # rows between progress lines on stderr
TAG_BLOCK = 4096  # songs per vectorised tag-sampling block

# Shares and shapes of the real data that the generator imitates.
EMPTY_GENRE_SHARE = 0.55
PREVIEW_SHARE = 0.75
COLD_SHARE = 0.08
SHARED_NAME_SHARE = 0.03
DUPLICATE_SHARE = 0.002
NON_ASCII_ARTIST_SHARE = 0.03
CLUSTER_TAG_SHARE = 0.8  # the rest of a song's tag mass is moods and decades
POPULAR_ROW_SHARE = 0.10  # rows a user draws from global popularity, not taste
SONGS_PER_ARTIST = 8
TOP_UP_ROUNDS = ("taste", "popular", "uniform", "uniform", "uniform")
PLAYCOUNT_ZIPF = 2.2
PLAYCOUNT_CAP = 2000

UPPER_DIGITS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ALPHANUMERIC = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
HEX = b"0123456789abcdef"

# Genre label -> tag family; the first tag is the genre's head tag.
TAG_FAMILIES: dict[str, tuple[str, ...]] = {
    "Rock": (
        "rock",
        "classic_rock",
        "hard_rock",
        "alternative",
        "alternative_rock",
        "indie",
        "indie_rock",
        "britpop",
        "grunge",
        "post_rock",
        "shoegaze",
        "psychedelic",
        "garage_rock",
        "progressive_rock",
        "soft_rock",
        "stoner_rock",
    ),
    "Electronic": (
        "electronic",
        "electronica",
        "electro",
        "house",
        "deep_house",
        "techno",
        "trance",
        "ambient",
        "idm",
        "downtempo",
        "trip_hop",
        "dubstep",
        "drum_and_bass",
        "synthpop",
        "chillout",
        "breakbeat",
    ),
    "Pop": (
        "pop",
        "dance",
        "pop_rock",
        "dance_pop",
        "teen_pop",
        "power_pop",
        "indie_pop",
        "electropop",
        "europop",
        "disco",
        "new_wave",
        "bubblegum",
        "art_pop",
    ),
    "Metal": (
        "metal",
        "heavy_metal",
        "death_metal",
        "black_metal",
        "thrash_metal",
        "doom_metal",
        "power_metal",
        "metalcore",
        "nu_metal",
        "progressive_metal",
        "industrial",
        "gothic_metal",
        "melodic_death_metal",
    ),
    "Rap": (
        "hip_hop",
        "rap",
        "gangsta_rap",
        "underground_hip_hop",
        "east_coast_rap",
        "west_coast",
        "dirty_south",
        "trap",
        "old_school",
        "turntablism",
        "grime",
        "crunk",
    ),
    "Jazz": (
        "jazz",
        "smooth_jazz",
        "bebop",
        "cool_jazz",
        "swing",
        "big_band",
        "fusion",
        "free_jazz",
        "acid_jazz",
        "lounge",
        "vocal_jazz",
        "jazz_piano",
    ),
    "RnB": (
        "rnb",
        "soul",
        "neo_soul",
        "funk",
        "motown",
        "quiet_storm",
        "contemporary_rnb",
        "new_jack_swing",
        "gospel",
        "urban",
        "slow_jams",
    ),
    "Reggae": ("reggae", "roots_reggae", "dub", "ska", "dancehall", "rocksteady", "lovers_rock", "jamaican", "ragga"),
    "Folk": (
        "folk",
        "indie_folk",
        "folk_rock",
        "acoustic",
        "singer_songwriter",
        "americana",
        "celtic",
        "freak_folk",
        "contemporary_folk",
        "traditional",
        "anti_folk",
    ),
    "Country": (
        "country",
        "alt_country",
        "bluegrass",
        "country_rock",
        "outlaw_country",
        "honky_tonk",
        "southern_rock",
        "country_pop",
        "rockabilly",
        "nashville",
    ),
    "Punk": (
        "punk",
        "punk_rock",
        "pop_punk",
        "post_punk",
        "hardcore_punk",
        "emo",
        "ska_punk",
        "skate_punk",
        "riot_grrrl",
        "post_hardcore",
        "screamo",
    ),
    "Blues": (
        "blues",
        "blues_rock",
        "delta_blues",
        "chicago_blues",
        "electric_blues",
        "rhythm_and_blues",
        "boogie",
        "soul_blues",
        "texas_blues",
        "slide_guitar",
    ),
    "New Age": (
        "new_age",
        "meditation",
        "relaxation",
        "healing",
        "instrumental",
        "piano",
        "space_music",
        "neoclassical",
        "minimalism",
        "ethereal",
    ),
    "World": (
        "world",
        "world_music",
        "african",
        "afrobeat",
        "flamenco",
        "indian",
        "klezmer",
        "balkan",
        "fado",
        "worldbeat",
        "chanson",
        "french",
    ),
    "Latin": (
        "latin",
        "salsa",
        "bossa_nova",
        "reggaeton",
        "latin_pop",
        "tango",
        "cumbia",
        "samba",
        "mpb",
        "brazilian",
        "spanish",
        "merengue",
    ),
}
GENRES = tuple(TAG_FAMILIES)
# How often each label is drawn for clusters beyond the first one-per-label.
GENRE_WEIGHTS = (0.21, 0.13, 0.12, 0.08, 0.07, 0.05, 0.06, 0.03, 0.05, 0.04, 0.05, 0.03, 0.02, 0.02, 0.04)
MOOD_TAGS = (
    "chill",
    "love",
    "sad",
    "party",
    "female_vocalists",
    "male_vocalists",
    "happy",
    "melancholy",
    "mellow",
    "beautiful",
    "favorites",
    "catchy",
    "energetic",
    "romantic",
    "summer",
    "upbeat",
    "dark",
    "atmospheric",
    "sexy",
    "night",
    "driving",
    "workout",
    "cover",
    "live",
    "seen_live",
    "guitar",
    "epic",
    "dreamy",
)
DECADE_TAGS = ("50s", "60s", "70s", "80s", "90s", "00s", "10s", "20s")  # index = (year-1950)//10
VOCABULARY = tuple(dict.fromkeys([*(t for f in TAG_FAMILIES.values() for t in f), *MOOD_TAGS, *DECADE_TAGS]))

TITLE_WORDS = tuple(
    """
Love Heart Night Fire Dream Summer Rain Light Dark Blue Gold Golden City Road Home River Moon
Sun Star Stars Sky Ocean Wild Young Lonely Broken Electric Midnight Forever Tonight Yesterday
Tomorrow Dance Dancing Running Falling Burning Shadow Shadows Ghost Angel Devil Heaven Paradise
Song Ballad Letter Girl Boy Baby Lady Man Woman King Queen Highway Train Window Mirror Glass
Silver Crystal Velvet Paper Stone Ice Winter Spring Autumn Morning Evening Sunday Friday Radio
Machine Heartbeat Echo Silence Thunder Storm Wind Smoke Neon Satellite Rocket Garden Island
Desert Mountain Valley Street Avenue Station Hotel Room Door Bridge Wall Sea Waves Tide Kiss
Touch Tears Smile Lies Truth Secret Memories Promise Dreams Colors Wonder Sweet Bitter Cold Hot
Slow Fast Little Big Last First Only One Two Crazy Beautiful Strange Sugar Honey Cherry Whiskey
Wine Money Gun Roses Lion Tiger Wolf Birds Butterfly Bones Blood Soul Mind Eyes Hands Time
""".split()
)
# Words that read badly inside "X of the Y" titles; they only appear in plain titles.
TITLE_FILLERS = tuple(
    """
Don't Can't Won't I'm It's You're We're Let's Ain't Gonna Wanna Mr. Mrs. Me You Us Again Away
Down Up Over Under Together Alone Never Always Back Run Stay Go Hold Wait Come Fly
""".split()
)
FIRST_NAMES = (
    "Mara",
    "Jonah",
    "Lena",
    "Otis",
    "Cleo",
    "Felix",
    "Nina",
    "Rufus",
    "Ada",
    "Milo",
    "Iris",
    "Caleb",
    "Tess",
    "Hugo",
    "Ruby",
    "Silas",
    "June",
    "Ezra",
    "Vera",
    "Leon",
    "Hazel",
    "Arlo",
    "Nora",
    "Jasper",
    "Ivy",
    "Dexter",
    "Maya",
    "Roscoe",
    "Lola",
    "Wes",
    "Billie",
    "Sam",
    "Etta",
    "Gus",
    "Frankie",
    "Dolly",
    "Curtis",
    "Odette",
)
SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "tor",
    "el",
    "sa",
    "dri",
    "na",
    "zu",
    "bel",
    "mar",
    "os",
    "ti",
    "quin",
    "ly",
    "fen",
    "ar",
    "is",
    "dor",
    "gan",
    "rel",
    "vin",
    "ko",
    "ta",
)
SURNAME_ENDINGS = ("", "", "son", "er", "ez", "ski", "ton", "ley", "ford", "man")
BAND_ADJECTIVES = (
    "Velvet",
    "Electric",
    "Black",
    "Silver",
    "Crimson",
    "Hollow",
    "Neon",
    "Wild",
    "Lonely",
    "Golden",
    "Broken",
    "Midnight",
    "Paper",
    "Atomic",
    "Rusty",
    "Gentle",
    "Savage",
    "Lucky",
    "Frozen",
    "Burning",
)
BAND_NOUNS = (
    "Foxes",
    "Kings",
    "Ghosts",
    "Wolves",
    "Rivers",
    "Machines",
    "Echoes",
    "Saints",
    "Shadows",
    "Horses",
    "Lights",
    "Pilots",
    "Sparrows",
    "Tigers",
    "Monsters",
    "Strangers",
    "Hearts",
    "Giants",
    "Robots",
    "Daggers",
)
ACCENTED_FIRST = (
    "Björn",
    "Sigrún",
    "José",
    "Zoë",
    "Ángel",
    "Søren",
    "Iñaki",
    "Jürgen",
    "Renée",
    "Anaïs",
    "Mónica",
    "Ólafur",
    "Chloé",
    "Raúl",
    "Dagný",
)
ACCENTED_LAST = (
    "Hallström",
    "Núñez",
    "Müller",
    "Ødegård",
    "Ríos",
    "Lévesque",
    "Sigurðsson",
    "Peña",
    "Kovač",
    "Åberg",
    "Gómez",
    "Brontë",
)
ACCENTED_BANDS = (
    "Mötley Wolves",
    "Sigur Dröm",
    "Café Tacuba Sur",
    "Los Niños Eléctricos",
    "Motörcrane",
    "Ölvis",
    "Björk Lindé",
    "Señor Pájaro",
    "Die Ärzte Nord",
    "Beyoncé Rivière",
)
CJK_SYLLABLES = ("山", "田", "光", "星", "月", "海", "花", "風", "雪", "川", "ヒ", "カ", "ル", "夢")
CYRILLIC_FIRST = ("Мирослав", "Анна", "Дмитрий", "Ольга", "Кира", "Лев")
CYRILLIC_LAST = ("Ковалёв", "Соколова", "Белый", "Орлов", "Звезда", "Север")
TITLE_SUFFIXES = (
    ("", 0.89),
    (" (Remix)", 0.03),
    (" (Live)", 0.02),
    (" (feat. {})", 0.03),
    (" (Acoustic)", 0.01),
    (" - Radio Edit", 0.01),
    (" (Album Version)", 0.01),
)


class FeatureSpec(NamedTuple):
    """Audio feature: cluster centroid range, per-song noise, valid range, output rounding.

    ``log`` features (speechiness, acousticness, ...) are drawn in log10 space because
    the real values span orders of magnitude (0.00119, 1.23e-05). ``digits`` > 0 rounds
    to that many decimals, < 0 to that many significant digits.
    """

    centroid: tuple[float, float]
    noise: float
    valid: tuple[float, float]
    log: bool
    digits: int


FEATURES: dict[str, FeatureSpec] = {
    "danceability": FeatureSpec((0.30, 0.78), 0.12, (0.05, 0.98), False, 3),
    "energy": FeatureSpec((0.25, 0.92), 0.14, (0.01, 1.0), False, 3),
    "loudness": FeatureSpec((-16.0, -4.5), 2.5, (-40.0, 0.0), False, 3),
    "speechiness": FeatureSpec((-1.6, -0.9), 0.25, (0.022, 0.96), True, -3),
    "acousticness": FeatureSpec((-3.5, -0.15), 0.7, (1e-6, 0.996), True, -3),
    "instrumentalness": FeatureSpec((-5.5, -0.3), 1.0, (1e-6, 0.99), True, -3),
    "liveness": FeatureSpec((-1.0, -0.6), 0.2, (0.015, 0.99), True, -3),
    "valence": FeatureSpec((0.20, 0.75), 0.18, (0.02, 0.98), False, 3),
    "tempo": FeatureSpec((85.0, 150.0), 22.0, (50.0, 220.0), False, 3),
}
# Genre-typical centroid overrides, so e.g. Metal is loud and Rap is wordy.
GENRE_CENTROIDS: dict[str, dict[str, tuple[float, float]]] = {
    "Metal": {"energy": (0.85, 0.97), "loudness": (-6.5, -3.5), "acousticness": (-4.5, -3.0)},
    "Rap": {"speechiness": (-1.0, -0.6), "danceability": (0.65, 0.85)},
    "Electronic": {"instrumentalness": (-1.0, -0.1), "danceability": (0.6, 0.8)},
    "New Age": {"energy": (0.05, 0.3), "acousticness": (-0.3, -0.02), "loudness": (-24, -14)},
    "Jazz": {"acousticness": (-0.6, -0.1), "energy": (0.2, 0.45)},
    "Folk": {"acousticness": (-0.5, -0.1), "energy": (0.2, 0.5)},
    "Punk": {"energy": (0.85, 0.97), "tempo": (150.0, 185.0)},
}


@dataclass(frozen=True)
class Clusters:
    """Genre clusters: label, tag pool, audio centroids, era and share of artists."""

    labels: list[str]
    pools: list[np.ndarray]  # vocabulary indices of each cluster's tags
    centroids: dict[str, np.ndarray]  # feature -> (n_clusters,)
    duration_log: np.ndarray
    mode_p: np.ndarray
    four_four_p: np.ndarray
    instrumental_zero_p: np.ndarray
    era: np.ndarray
    weight: np.ndarray


@dataclass(frozen=True)
class Artists:
    """Artists: name, cluster, active era and signature tags (a subset of the cluster pool)."""

    names: list[str]
    cluster: np.ndarray
    era: np.ndarray
    signatures: np.ndarray  # (n_artists, width) vocabulary indices, -1 padded
    offsets: dict[str, np.ndarray]  # feature -> per-artist shift of the centroid


@dataclass(frozen=True)
class Sampler:
    """Precomputed popularity CDFs used to draw interaction songs vectorised."""

    cluster_p: np.ndarray  # chance a taste cluster is picked
    cluster_cdfs: np.ndarray  # concatenated (cluster index + within-cluster CDF)
    cluster_songs: np.ndarray  # song behind each cluster_cdfs entry
    cluster_last: np.ndarray  # last cluster_cdfs position of each cluster
    popular_cdf: np.ndarray
    warm_songs: np.ndarray  # songs with popularity > 0, in catalog order

    def taste(self, rng: np.random.Generator, users: np.ndarray, clusters: np.ndarray, cum: np.ndarray) -> np.ndarray:
        """Songs for rows of ``users``: from their taste clusters, some from global popularity."""
        r = rng.random(users.size)
        slot = (r >= cum[users, 0]).astype(np.int64) + (r >= cum[users, 1])
        chosen = clusters[users, slot]
        pos = np.searchsorted(self.cluster_cdfs, chosen + rng.random(users.size), side="right")
        songs = self.cluster_songs[np.minimum(pos, self.cluster_last[chosen])]
        popular = np.flatnonzero(rng.random(users.size) < POPULAR_ROW_SHARE)
        songs[popular] = self.popular(rng, popular.size)
        return songs

    def popular(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Songs drawn by global popularity."""
        return self.warm_songs[np.searchsorted(self.popular_cdf, rng.random(n), side="right")]

    def uniform(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Songs drawn uniformly among those anybody plays (last-resort top-up)."""
        return self.warm_songs[rng.integers(0, self.warm_songs.size, n)]


def _codes(rng: np.random.Generator, n: int, length: int, alphabet: bytes) -> np.ndarray:
    """Random ASCII codes as an (n, length) uint8 matrix over ``alphabet``."""
    table = np.frombuffer(alphabet, dtype=np.uint8)
    return table[rng.integers(0, len(alphabet), (n, length))]


def _as_str(codes: np.ndarray) -> list[str]:
    """Rows of an ASCII code matrix as Python strings."""
    return [bytes(row).decode("ascii") for row in codes]


def _string_array(codes: np.ndarray) -> pa.Array:
    """Arrow string array viewing the rows of a fixed-width ASCII code matrix (no copies)."""
    n, width = codes.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(codes)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _track_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unique ``TR`` + 16 uppercase alphanumerics track ids as an (n, 18) code matrix."""
    body = _codes(rng, n, 16, UPPER_DIGITS)
    while True:
        _, first = np.unique(body.view("S16").ravel(), return_index=True)
        clashes = np.setdiff1d(np.arange(n), first)
        if clashes.size == 0:
            break
        body[clashes] = _codes(rng, clashes.size, 16, UPPER_DIGITS)
    prefix = np.broadcast_to(np.frombuffer(b"TR", dtype=np.uint8), (n, 2))
    return np.hstack([prefix, body])


def _round(values: np.ndarray, digits: int) -> np.ndarray:
    """Round to ``digits`` decimals (> 0) or -``digits`` significant digits (< 0, values < 1).

    Dividing an integer by an exact power of ten makes ``repr`` print the short
    decimal the real file has (``0.00119``, ``1.23e-05``).
    """
    if digits > 0:
        return np.round(values, digits)
    magnitude = np.floor(np.log10(np.abs(np.where(values == 0, 1.0, values))))
    scale = 10.0 ** (-digits - 1 - magnitude)
    return np.rint(values * scale) / scale


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Weights ∝ rank^-exponent over a random ranking of n items."""
    return (rng.permutation(n) + 1.0) ** -exponent


def _build_clusters(rng: np.random.Generator, n: int) -> Clusters:
    """Genre clusters with uneven (Zipf-like) sizes, tag pools, audio centroids and eras.

    A pool is 12-25 tags: the genre's head tag, more of its family and 3-5 (more for
    small families) borrowed from two other genres, like a rock cluster with punk tags.
    """
    first = list(rng.permutation(len(GENRES)))[:n]
    extra = rng.choice(len(GENRES), size=max(0, n - len(GENRES)), p=GENRE_WEIGHTS)
    genre_ids = np.array([*first, *extra], dtype=np.int64)
    labels = [GENRES[g] for g in genre_ids]
    # Zipf sizes, handed out so that common genres (Rock, Electronic) tend to get big clusters.
    size_order = np.argsort(-np.array(GENRE_WEIGHTS)[genre_ids] * rng.lognormal(0.0, 0.5, n))
    weight = np.empty(n)
    weight[size_order] = np.arange(1.0, n + 1) ** -0.8
    vocab_index = {t: i for i, t in enumerate(VOCABULARY)}
    pools = []
    for label in labels:
        family = [vocab_index[t] for t in TAG_FAMILIES[label]]
        neighbours = rng.choice([g for g in GENRES if g != label], 2, replace=False)
        others = np.setdiff1d([vocab_index[t] for g in neighbours for t in TAG_FAMILIES[g]], family)
        size = min(int(rng.integers(12, 26)), len(family) + 5)
        borrowed = max(3, size - len(family))
        own = rng.choice(family[1:], size - 1 - borrowed, replace=False)
        chosen = [family[0], *own, *rng.choice(others, borrowed, replace=False)]
        pools.append(np.array(chosen, dtype=np.int64))
    centroids = {}
    for feature, spec in FEATURES.items():
        ranges = [GENRE_CENTROIDS.get(label, {}).get(feature, spec.centroid) for label in labels]
        low, high = np.array(ranges).T
        centroids[feature] = rng.uniform(low, high)
    return Clusters(
        labels=labels,
        pools=pools,
        centroids=centroids,
        duration_log=np.log(rng.uniform(180_000, 300_000, n)),
        mode_p=rng.uniform(0.45, 0.85, n),
        four_four_p=rng.uniform(0.8, 0.97, n),
        instrumental_zero_p=rng.uniform(0.05, 0.45, n),
        era=rng.uniform(1965, 2012, n),
        weight=weight,
    )


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    """One element of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]


def _invented_word(rng: np.random.Generator) -> str:
    """A capitalised made-up word of 2-3 syllables ("Velkamar")."""
    return "".join(_pick(rng, SYLLABLES) for _ in range(int(rng.integers(2, 4)))).title()


def _latin_name(rng: np.random.Generator) -> str:
    """An ASCII artist name: band, person, invented word or DJ alias."""
    pattern = int(rng.integers(6))
    if pattern == 0:
        return f"The {_pick(rng, BAND_ADJECTIVES)} {_pick(rng, BAND_NOUNS)}"
    if pattern == 1:
        return f"{_pick(rng, BAND_ADJECTIVES)} {_pick(rng, BAND_NOUNS)}"
    if pattern == 2:
        return _invented_word(rng)
    if pattern == 3:
        return f"{_pick(rng, ('DJ', 'MC', 'Lil'))} {_invented_word(rng)}"
    person = f"{_pick(rng, FIRST_NAMES)} {_invented_word(rng)}{_pick(rng, SURNAME_ENDINGS)}"
    return f"{person} & the {_pick(rng, BAND_NOUNS)}" if pattern == 4 else person


def _non_ascii_name(rng: np.random.Generator) -> str:
    """A made-up artist name with accented Latin, CJK or Cyrillic characters."""
    pattern = int(rng.integers(10))
    if pattern < 3:
        return f"{_pick(rng, ACCENTED_FIRST)} {_pick(rng, ACCENTED_LAST)}"
    if pattern < 5:
        return f"{_pick(rng, ACCENTED_FIRST)} {_invented_word(rng)}"
    if pattern < 7:
        return _pick(rng, ACCENTED_BANDS)
    if pattern < 9:
        return "".join(_pick(rng, CJK_SYLLABLES) for _ in range(int(rng.integers(2, 5))))
    return f"{_pick(rng, CYRILLIC_FIRST)} {_pick(rng, CYRILLIC_LAST)}"


def _artist_names(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct artist names, about 3% of them non-ASCII."""
    non_ascii = rng.random(n) < NON_ASCII_ARTIST_SHARE
    if n >= 20 and not non_ascii.any():  # small catalogs still get the quirk
        non_ascii[rng.integers(n)] = True
    names: list[str] = []
    taken: set[str] = set()
    for flag in non_ascii:
        make = _non_ascii_name if flag else _latin_name
        name, attempt = make(rng), 1
        while name in taken:  # after 20 clashes, number the name to guarantee progress
            attempt += 1
            name = make(rng) if attempt <= 20 else f"{make(rng)} {attempt}"
        taken.add(name)
        names.append(name)
    return names


def _build_artists(rng: np.random.Generator, n: int, clusters: Clusters) -> Artists:
    """Artists spread over clusters by cluster weight (every cluster gets one if possible)."""
    n_clusters = len(clusters.labels)
    p = clusters.weight / clusters.weight.sum()
    cluster = rng.choice(n_clusters, size=n, p=p)
    cluster[: min(n, n_clusters)] = rng.permutation(n_clusters)[:n]
    width = 8
    signatures = np.full((n, width), -1, dtype=np.int64)
    for a, c in enumerate(cluster):
        pool = clusters.pools[c]
        size = min(pool.size, int(rng.integers(4, width + 1)))
        signatures[a, :size] = rng.choice(pool, size, replace=False)
    offsets = {f: rng.normal(0.0, spec.noise / 3, n) for f, spec in FEATURES.items()}
    return Artists(
        names=_artist_names(rng, n),
        cluster=cluster,
        era=clusters.era[cluster] + rng.normal(0.0, 7.0, n),
        signatures=signatures,
        offsets=offsets,
    )


def _song_artists(rng: np.random.Generator, n_songs: int, n_artists: int) -> np.ndarray:
    """Artist of each song: everyone gets one, the rest heavy-tailed (Pareto weights)."""
    weights = rng.pareto(1.3, n_artists) + 1.0
    extra = rng.choice(n_artists, size=max(0, n_songs - n_artists), p=weights / weights.sum())
    return np.sort(np.concatenate([np.arange(min(n_songs, n_artists)), extra]))


def _titles(rng: np.random.Generator, song_artist: np.ndarray, artist_names: list[str]) -> list[str]:
    """Song titles of 1-4 title-case words, some with (Remix)/(feat. X)-style suffixes.

    Titles are distinct within an artist (a clash gets another word), so exact
    name+artist duplicates only come from the deliberate copies.
    """
    n = song_artist.size
    n_words = rng.choice([1, 2, 3, 4], size=n, p=[0.3, 0.35, 0.25, 0.1])
    vocabulary = TITLE_WORDS + TITLE_FILLERS
    words = rng.integers(0, len(vocabulary), (n, 4))
    shape = rng.random(n)
    suffix_kind = rng.choice(len(TITLE_SUFFIXES), size=n, p=[p for _, p in TITLE_SUFFIXES])
    featured = rng.integers(0, len(artist_names), n)
    titles: list[str] = []
    seen: set[tuple[int, str]] = set()
    for i in range(n):
        w = [vocabulary[j] for j in words[i, : n_words[i]]]
        if len(w) >= 2 and shape[i] < 0.1 and max(words[i, : n_words[i]]) < len(TITLE_WORDS):
            title = f"{w[0]} of the {' '.join(w[1:])}"
        elif len(w) >= 2 and shape[i] < 0.13:
            title = f"{w[0]}, {' '.join(w[1:])}"
        else:
            title = " ".join(w)
        suffix = TITLE_SUFFIXES[suffix_kind[i]][0].format(artist_names[featured[i]])
        while (song_artist[i], title + suffix) in seen:
            title = f"{title} {TITLE_WORDS[int(rng.integers(len(TITLE_WORDS)))]}"
        seen.add((song_artist[i], title + suffix))
        titles.append(title + suffix)
    return titles


def _share_names(rng: np.random.Generator, titles: np.ndarray, artist: np.ndarray) -> None:
    """Give ~3% of songs the exact title of a song by another artist (in place)."""
    n = titles.size
    count = max(1, round(SHARED_NAME_SHARE * n)) if np.unique(artist).size > 1 else 0
    order = rng.permutation(n)
    receivers, sources = order[:count], order[count : 2 * count]
    ok = artist[receivers] != artist[sources]
    while not ok.any() and count:  # tiny catalogs: guarantee at least one shared title
        sources = rng.permutation(n)[: receivers.size]
        ok = artist[receivers] != artist[sources]
    titles[receivers[ok]] = titles[sources[ok]]


def _song_tags(
    rng: np.random.Generator, clusters: Clusters, artists: Artists, song_artist: np.ndarray, year: np.ndarray
) -> np.ndarray:
    """Comma-separated tag strings, weighted towards the cluster pool and artist signature.

    Each song samples 2-10 tags without replacement (exponential-race keys) from a
    mix: 80% cluster pool (half of it the artist's signature tags), 20% moods and the
    song's decade. Tags come out in order of salience, like Last.fm's lists.
    """
    n, v = song_artist.size, len(VOCABULARY)
    vocab_index = {t: i for i, t in enumerate(VOCABULARY)}
    pool_w = np.zeros((len(clusters.labels), v))
    for c, pool in enumerate(clusters.pools):
        pool_w[c, pool] = CLUSTER_TAG_SHARE / 2 / pool.size
    mood_w = np.zeros(v)
    mood_w[[vocab_index[t] for t in MOOD_TAGS]] = (1 - CLUSTER_TAG_SHARE) / 2 / len(MOOD_TAGS)
    decade_ids = np.array([vocab_index[t] for t in DECADE_TAGS])[(year - 1950) // 10]
    sig = artists.signatures
    sig_w = CLUSTER_TAG_SHARE / 2 / (sig >= 0).sum(axis=1)
    n_tags = 2 + rng.binomial(8, 0.45, n)
    vocab = np.array(VOCABULARY, dtype=object)
    tags = np.empty(n, dtype=object)
    for start in range(0, n, TAG_BLOCK):
        rows = np.arange(start, min(n, start + TAG_BLOCK))
        a = song_artist[rows]
        weights = pool_w[artists.cluster[a]] + mood_w
        weights[np.arange(rows.size), decade_ids[rows]] += (1 - CLUSTER_TAG_SHARE) / 2
        r, k = np.nonzero(sig[a] >= 0)
        weights[r, sig[a][r, k]] += sig_w[a][r]
        with np.errstate(divide="ignore"):
            keys = rng.exponential(size=weights.shape) / weights
        top = np.argpartition(keys, 10, axis=1)[:, :10]
        top = np.take_along_axis(top, np.argsort(np.take_along_axis(keys, top, 1), axis=1), 1)
        for i, row in enumerate(rows):
            tags[row] = ", ".join(vocab[top[i, : n_tags[row]]])
    return tags


def _audio(
    rng: np.random.Generator, clusters: Clusters, artists: Artists, song_artist: np.ndarray
) -> dict[str, np.ndarray]:
    """Audio features = cluster centroid + artist shift + song noise, clipped and rounded."""
    n = song_artist.size
    cluster = artists.cluster[song_artist]
    columns: dict[str, np.ndarray] = {}
    for feature, spec in FEATURES.items():
        raw = (
            clusters.centroids[feature][cluster]
            + artists.offsets[feature][song_artist]
            + rng.normal(0.0, spec.noise, n)
        )
        value = np.clip(10.0**raw if spec.log else raw, *spec.valid)
        columns[feature] = _round(value, spec.digits)
    zero = rng.random(n) < clusters.instrumental_zero_p[cluster]
    columns["instrumentalness"] = np.where(zero, 0.0, columns["instrumentalness"])
    columns["key"] = rng.integers(0, 12, n)
    columns["mode"] = (rng.random(n) < clusters.mode_p[cluster]).astype(np.int64)
    u, p4 = rng.random(n), clusters.four_four_p[cluster]
    columns["time_signature"] = np.where(u < p4, 4, np.where(u < p4 + (1 - p4) * 0.8, 3, 5))
    duration = np.exp(clusters.duration_log[cluster] + rng.normal(0.0, 0.25, n))
    columns["duration_ms"] = np.clip(np.rint(duration), 90_000, 600_000).astype(np.int64)
    return columns


def _build_catalog(rng: np.random.Generator, n_songs: int, n_clusters: int) -> dict[str, np.ndarray]:
    """All catalog columns (plus ``cluster`` and ``popularity``) as per-song arrays."""
    n_dup = max(round(DUPLICATE_SHARE * n_songs), 2 if n_songs >= 500 else 0)
    n_base = n_songs - n_dup
    clusters = _build_clusters(rng, n_clusters)
    artists = _build_artists(rng, max(1, n_base // SONGS_PER_ARTIST), clusters)
    song_artist = _song_artists(rng, n_base, len(artists.names))
    year = np.clip(np.rint(artists.era[song_artist] + rng.normal(0.0, 3.0, n_base)), 1950, 2020)
    year = year.astype(np.int64)
    cluster = artists.cluster[song_artist]
    titles = np.array(_titles(rng, song_artist, artists.names), dtype=object)
    _share_names(rng, titles, song_artist)
    has_preview = rng.random(n_base) < PREVIEW_SHARE
    previews = [
        f"{PREVIEW_PREFIX}{h}?cid={PREVIEW_CID}" if ok else ""
        for h, ok in zip(_as_str(_codes(rng, n_base, 40, HEX)), has_preview)
    ]
    labels = np.array(clusters.labels, dtype=object)[cluster]
    columns = {
        "name": titles,
        "artist": np.array(artists.names, dtype=object)[song_artist],
        "spotify_preview_url": np.array(previews, dtype=object),
        "spotify_id": np.array(_as_str(_codes(rng, n_base, 22, ALPHANUMERIC)), dtype=object),
        "tags": _song_tags(rng, clusters, artists, song_artist, year),
        "genre": np.where(rng.random(n_base) < EMPTY_GENRE_SHARE, "", labels).astype(object),
        "year": year,
        **_audio(rng, clusters, artists, song_artist),
        "cluster": cluster,
    }
    copies = rng.choice(n_base, size=n_dup, replace=False)
    order = rng.permutation(n_songs)
    rows = np.concatenate([np.arange(n_base), copies])[order]
    columns = {k: v[rows] for k, v in columns.items()}
    columns["track_id"] = _track_ids(rng, n_songs)
    popularity = _zipf_weights(rng, n_songs, 1.0)
    popularity[rng.choice(n_songs, size=min(round(COLD_SHARE * n_songs), n_songs - 1), replace=False)] = 0.0
    columns["popularity"] = popularity
    return columns


def _catalog_rows(columns: dict[str, np.ndarray]) -> Iterator[list]:
    """CSV rows in header order, as Python scalars so floats print via repr."""
    lists = [(_as_str(columns[c]) if c == "track_id" else columns[c].tolist()) for c in CATALOG_COLUMNS]
    return (list(row) for row in zip(*lists))


def _write_catalog(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Write ``Music Info.csv`` row by row with the csv module (QUOTE_MINIMAL, ``\\n``)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(CATALOG_COLUMNS)
        writer.writerows(_catalog_rows(columns))


def _sampler(cluster: np.ndarray, popularity: np.ndarray, n_clusters: int) -> Sampler:
    """Per-cluster and global popularity CDFs over the songs anybody plays."""
    warm = np.flatnonzero(popularity > 0)
    by_cluster = warm[np.argsort(cluster[warm], kind="stable")]
    cdfs = []
    for c in range(n_clusters):
        members = by_cluster[cluster[by_cluster] == c]
        cdf = np.cumsum(popularity[members])
        cdfs.append(c + cdf / cdf[-1] if members.size else cdf)
    sizes = np.bincount(cluster[warm], minlength=n_clusters)
    popular_cdf = np.cumsum(popularity[warm])
    return Sampler(
        cluster_p=sizes / sizes.sum(),
        cluster_cdfs=np.concatenate(cdfs),
        cluster_songs=by_cluster,
        cluster_last=np.cumsum(sizes) - 1,
        popular_cdf=popular_cdf / popular_cdf[-1],
        warm_songs=warm,
    )


def _rows_per_user(rng: np.random.Generator, users: int, plays: int, cap: int) -> np.ndarray:
    """Heavy-tailed (lognormal) rows per user summing exactly to ``plays``, at most ``cap`` each.

    Everybody gets one row when there are enough plays; the rest is shared in
    proportion to the weights, largest fractional parts rounding up.
    """
    weights = rng.lognormal(0.0, 1.0, users)
    counts = np.full(users, 1 if plays >= users else 0, dtype=np.int64)
    remaining = plays - int(counts.sum())
    while remaining > 0:
        open_users = np.flatnonzero(counts < cap)
        if open_users.size == 0:
            break
        share = weights[open_users] / weights[open_users].sum() * remaining
        add = np.minimum(np.floor(share).astype(np.int64), cap - counts[open_users])
        counts[open_users] += add
        remaining -= int(add.sum())
        if 0 < remaining < open_users.size:
            bump = open_users[np.argsort(add - share, kind="stable")[:remaining]]
            bump = bump[counts[bump] < cap]
            counts[bump] += 1
            remaining -= bump.size
    return counts


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values; a plain sort is several times faster than np.unique's hashing here."""
    values = np.sort(values)
    first = np.ones(values.size, dtype=bool)
    first[1:] = values[1:] != values[:-1]
    return values[first]


def _chunk(
    rng: np.random.Generator, sampler: Sampler, targets: np.ndarray, n_songs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (local user, song) pairs for a chunk of users with ``targets`` rows each.

    Draw from taste, drop duplicate pairs, then top up shortfalls: once more from
    taste, then from global popularity, then uniformly (which fills heavy users of
    small clusters). Pairs come out sorted by user.
    """
    n_users = targets.size
    clusters = rng.choice(sampler.cluster_p.size, size=(n_users, 3), p=sampler.cluster_p)
    weights = rng.gamma(1.0, size=(n_users, 3))  # normalised: Dirichlet(1, 1, 1)
    weights[np.arange(3) >= rng.integers(1, 4, n_users)[:, None]] = 0.0
    cum = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    users = np.repeat(np.arange(n_users), targets)
    keys = _sorted_unique(users * n_songs + sampler.taste(rng, users, clusters, cum))
    for source in TOP_UP_ROUNDS:
        missing = targets - np.bincount(keys // n_songs, minlength=n_users)
        if not missing.any():
            break
        users = np.repeat(np.arange(n_users), missing)
        if source == "taste":
            songs = sampler.taste(rng, users, clusters, cum)
        elif source == "popular":
            songs = sampler.popular(rng, users.size)
        else:
            songs = sampler.uniform(rng, users.size)
        keys = _sorted_unique(np.concatenate([keys, users * n_songs + songs]))
    return keys // n_songs, keys % n_songs


def _write_history(
    path: Path, catalog: dict[str, np.ndarray], users: int, plays: int, seed: int, n_clusters: int
) -> tuple[int, int]:
    """Stream ``User Listening History.csv`` in chunks of users; return (rows, users) written."""
    sampler = _sampler(catalog["cluster"], catalog["popularity"], n_clusters)
    n_songs = catalog["cluster"].size
    cap = max(sampler.warm_songs.size // 4, -(-plays // users))
    counts = _rows_per_user(np.random.default_rng([seed, 1]), users, plays, cap)
    ends = np.cumsum(counts)
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    rows_written = users_written = 0
    start, chunk_index = 0, 0
    with path.open("wb") as f:
        f.write(HISTORY_HEADER)
        while start < users:
            done = int(ends[start - 1]) if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, done + CHUNK_ROWS, side="right")))
            rng = np.random.default_rng([seed, 2, chunk_index])
            user_ids = _codes(rng, stop - start, 40, HEX)
            local_user, song = _chunk(rng, sampler, counts[start:stop], n_songs)
            playcount = np.minimum(rng.zipf(PLAYCOUNT_ZIPF, song.size), PLAYCOUNT_CAP)
            table = pa.table(
                {
                    "track_id": _string_array(catalog["track_id"][song]),
                    "user_id": _string_array(user_ids[local_user]),
                    "playcount": pa.array(playcount),
                }
            )
            pacsv.write_csv(table, f, write_options=options)
            if (rows_written + song.size) // PROGRESS_EVERY > rows_written // PROGRESS_EVERY:
                print(f"demo_data: {rows_written + song.size:,} / {plays:,} rows", file=sys.stderr)
            rows_written += song.size
            users_written += int(np.count_nonzero(np.bincount(local_user)))
            start, chunk_index = stop, chunk_index + 1
    return rows_written, users_written


def generate(
    out_dir: str | Path,
    songs: int = 5000,
    plays: int = 500_000,
    seed: int = 0,
    users: int | None = None,
    clusters: int = 30,
) -> dict:
    """Write both CSV files into ``out_dir`` and return a summary.

    ``users`` defaults to max(plays // 10, 50), about the real rows-per-user ratio.
    ``rows`` in the summary is the exact number written; it can fall slightly short
    of ``plays`` when a user's (user, track) pairs cannot all be made unique.
    """
    if songs < 1 or plays < 0 or seed < 0 or clusters < 1 or (users is not None and users < 1):
        raise ValueError("need songs >= 1, plays >= 0, seed >= 0, clusters >= 1, users >= 1")
    users = max(plays // 10, 50) if users is None else users
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    catalog = _build_catalog(np.random.default_rng([seed, 0]), songs, clusters)
    _write_catalog(out / CATALOG_FILE, catalog)
    rows, users_written = _write_history(out / HISTORY_FILE, catalog, users, plays, seed, clusters)
    return {
        "songs": songs,
        "rows": rows,
        "users": users_written,
        "seconds": round(time.perf_counter() - started, 2),
        "paths": {"music_info": str(out / CATALOG_FILE), "listening_history": str(out / HISTORY_FILE)},
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--songs", type=int, default=5000, help="catalog rows")
    parser.add_argument("--plays", type=int, default=500_000, help="listening-history rows requested")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=None, help="default: max(plays // 10, 50)")
    parser.add_argument("--clusters", type=int, default=30, help="genre clusters")
    args = parser.parse_args(argv)
    summary = generate(args.out, args.songs, args.plays, args.seed, args.users, args.clusters)
    print(
        f"demo_data: {summary['songs']:,} songs, {summary['rows']:,} rows, "
        f"{summary['users']:,} users in {summary['seconds']}s -> {args.out}"
    )


if __name__ == "__main__":
    main()

"""Agent names: memorable Adjective+Noun pairs (11,187 combinations) and name sanitising.

Names are stored sanitised (letters and digits only, ≤ 128 chars), so `blue-lake`, `Blue Lake`
and `bluelake` all address `BlueLake`. Uniqueness is enforced by the database, not here.
"""

from __future__ import annotations

import random
import re

MAX_NAME_CHARS = 128

ADJECTIVES = """
Amber Ancient Arctic Ashen Autumn Azure Bold Brave Breezy Bright Brisk Bronze Calm Candid Cedar
Clever Cobalt Cosmic Crimson Crisp Curious Dapper Dawn Deft Dusky Eager Early Ember Emerald Even
Fair Fearless Fern Fleet Foggy Frosty Gentle Gilded Glad Golden Granite Green Hazel Hidden Honest
Humble Icy Indigo Ivory Jade Jolly Keen Kind Lavender Lilac Lively Lucky Lunar Maple Marble Mellow
Merry Misty Modest Mossy Nimble Noble Ochre Olive Onyx Opal Orange Patient Pearl Plucky Polar Proud
Quick Quiet Rapid Rosy Ruby Russet Rustic Sage Sandy Scarlet Serene Silent Silver Sleek Snowy Solar
Spry Steady Stormy Sunny Swift Tawny Teal Tidy Topaz Tranquil Upbeat Valiant Velvet Vivid Warm Wild
Windy Wise Witty Zesty
""".split()

NOUNS = """
Acorn Anchor Aspen Badger Bay Beacon Bear Birch Bison Bluff Brook Canyon Cape Castle Cat Cedar
Cliff Cloud Comet Coral Cove Crane Creek Crest Delta Dog Dove Dune Eagle Elk Falcon Fern Field Finch
Fjord Forest Fox Gale Glacier Glen Grove Harbor Hare Hawk Heron Hill Island Jay Kestrel Lake Lark
Ledge Lynx Maple Marsh Meadow Mesa Mill Moon Moose Moss Mountain Oak Orca Otter Owl Peak Pebble Pine
Plain Pond Quail Rain Raven Reef Ridge River Robin Rock Sage Shore Sparrow Spring Spruce Star Stone
Storm Stream Summit Swan Thunder Tide Trail Valley Vale Willow Wolf Wren Yak
""".split()

_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")


def sanitize(name: str) -> str:
    """Letters and digits only (upstream: `Alice_abc123` is stored as `Aliceabc123`)."""
    return _NON_ALNUM.sub("", name)[:MAX_NAME_CHARS]


def lookup_key(name: str) -> str:
    """The case-insensitive key names are unique by: `blue-lake` -> `bluelake`."""
    return sanitize(name).lower()


# `all` addresses every agent of a project (broadcast): no agent may be called that.
RESERVED = frozenset({"all"})


def is_reserved(name: str) -> bool:
    return lookup_key(name) in RESERVED


def generate(rng: random.Random | None = None) -> str:
    chooser = rng or random
    return chooser.choice(ADJECTIVES) + chooser.choice(NOUNS)


COMBINATIONS = len(set(ADJECTIVES)) * len(set(NOUNS))

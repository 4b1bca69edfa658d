"""Writes the two small zero-shot tasks shipped in evaluators/quality/tasks/ (JSONL, one item a line).

Every item is generated from the tables below, which pressroom's developers wrote for this purpose
(simple English facts and sequences, no text taken from any dataset); they are released with
pressroom under Apache-2.0. Distractors are drawn with a fixed seed, so the files are reproducible:

    python scripts/make_eval_tasks.py
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

logger = logging.getLogger(__name__)

FOLDER = Path(__file__).resolve().parents[1] / "evaluators" / "quality" / "tasks"

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "Greece": "Athens",
    "Austria": "Vienna", "Poland": "Warsaw", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Denmark": "Copenhagen", "Ireland": "Dublin", "Hungary": "Budapest", "Kenya": "Nairobi", "Peru": "Lima",
    "Argentina": "Buenos Aires", "Mexico": "Mexico City", "Canada": "Ottawa", "Australia": "Canberra",
    "India": "New Delhi", "Thailand": "Bangkok", "Belgium": "Brussels", "the Netherlands": "Amsterdam",
    "Cuba": "Havana", "Chile": "Santiago", "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad",
    "South Korea": "Seoul", "the Philippines": "Manila", "Indonesia": "Jakarta", "Vietnam": "Hanoi",
    "Ukraine": "Kyiv", "Czechia": "Prague", "Romania": "Bucharest", "Colombia": "Bogota",
    "Venezuela": "Caracas", "Ethiopia": "Addis Ababa", "Nigeria": "Abuja", "Morocco": "Rabat",
    "Iceland": "Reykjavik", "Switzerland": "Bern", "the United Kingdom": "London",
    "the United States": "Washington", "Scotland": "Edinburgh",
}  # fmt: skip
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "day": "night", "happy": "sad",
    "light": "dark", "old": "young", "open": "closed", "wet": "dry", "early": "late", "full": "empty",
    "hard": "soft", "high": "low", "long": "short", "loud": "quiet", "rich": "poor", "strong": "weak",
    "thick": "thin", "true": "false", "win": "lose", "buy": "sell", "push": "pull", "inside": "outside",
    "first": "last", "clean": "dirty", "above": "below", "left": "right",
    "north": "south", "east": "west", "begin": "end", "arrive": "leave", "laugh": "cry", "sweet": "sour",
    "friend": "enemy", "question": "answer", "remember": "forget", "asleep": "awake", "cheap": "expensive",
    "near": "far", "narrow": "wide", "safe": "dangerous", "summer": "winter", "sunrise": "sunset",
    "easy": "difficult", "alive": "dead", "always": "never", "before": "after", "give": "take",
}  # fmt: skip
SOUNDS = {
    "dog": "barks", "cat": "meows", "cow": "moos", "sheep": "bleats", "horse": "neighs", "duck": "quacks",
    "lion": "roars", "snake": "hisses", "pig": "oinks", "owl": "hoots", "bee": "buzzes", "frog": "croaks",
    "wolf": "howls", "mouse": "squeaks", "rooster": "crows",
}  # fmt: skip
COLOURS = {
    "the sky on a clear day": "blue", "grass": "green", "snow": "white", "coal": "black",
    "a ripe banana": "yellow", "a ripe tomato": "red", "an orange": "orange", "milk": "white",
    "a lemon": "yellow", "blood": "red", "a carrot": "orange", "a crow": "black", "a leaf in summer": "green",
    "the sea on a sunny day": "blue", "chocolate": "brown", "a polar bear": "white",
}  # fmt: skip
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]  # fmt: skip
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
           "nineteen", "twenty"]  # fmt: skip
PLURALS = {
    "mouse": "mice", "child": "children", "foot": "feet", "tooth": "teeth", "man": "men", "woman": "women",
    "goose": "geese", "person": "people", "box": "boxes", "city": "cities", "knife": "knives", "leaf": "leaves",
    "wolf": "wolves", "baby": "babies", "bus": "buses", "dish": "dishes", "story": "stories", "half": "halves",
}  # fmt: skip


def _item(rng: random.Random, text: str, answer: str, pool: list[str]) -> dict[str, object]:
    """A four-way item: the answer and three distinct distractors from `pool`, in a shuffled order."""
    choices = [answer, *rng.sample(sorted(set(pool) - {answer}), 3)]
    rng.shuffle(choices)
    return {"question": text, "choices": choices, "answer": choices.index(answer)}


def facts(rng: random.Random) -> list[dict[str, object]]:
    items = [_item(rng, f"The capital of {c} is", a, list(CAPITALS.values())) for c, a in CAPITALS.items()]
    items += [_item(rng, f"The opposite of {w} is", a, list(OPPOSITES.values())) for w, a in OPPOSITES.items()]
    items += [_item(rng, f"The opposite of {a} is", w, list(OPPOSITES)) for w, a in OPPOSITES.items()]
    items += [_item(rng, f"A {animal}", s, list(SOUNDS.values())) for animal, s in SOUNDS.items()]
    items += [_item(rng, f"The colour of {t} is", c, list(COLOURS.values())) for t, c in COLOURS.items()]
    items += [_item(rng, f"{c} is the capital of", country, list(CAPITALS)) for country, c in CAPITALS.items()]
    return items


def sequences(rng: random.Random) -> list[dict[str, object]]:
    items = [_item(rng, f"The day after {d} is", DAYS[(i + 1) % 7], DAYS) for i, d in enumerate(DAYS)]
    items += [_item(rng, f"The day before {d} is", DAYS[i - 1], DAYS) for i, d in enumerate(DAYS)]
    items += [_item(rng, f"The month after {m} is", MONTHS[(i + 1) % 12], MONTHS) for i, m in enumerate(MONTHS)]
    items += [_item(rng, f"The month before {m} is", MONTHS[i - 1], MONTHS) for i, m in enumerate(MONTHS)]
    items += [
        _item(rng, f"{NUMBERS[i].capitalize()}, {NUMBERS[i + 1]}, {NUMBERS[i + 2]},", NUMBERS[i + 3], NUMBERS)
        for i in range(len(NUMBERS) - 3)
    ]
    items += [
        _item(rng, f"{NUMBERS[a].capitalize()} plus {NUMBERS[b]} is", NUMBERS[a + b], NUMBERS)
        for a in range(1, 11)
        for b in range(1, 11)
        if a + b <= 20 and (a + b) % 2 == a % 2  # every other sum: 50 items
    ]
    items += [
        _item(rng, f"{NUMBERS[a].capitalize()} minus {NUMBERS[b]} is", NUMBERS[a - b], NUMBERS)
        for a in range(2, 21, 2)
        for b in range(1, a, 3)
    ]
    items += [_item(rng, f"One {s}, two", p, list(PLURALS.values())) for s, p in PLURALS.items()]
    letters = "abcdefghijklmnopqrstuvwxyz".upper()
    items += [
        _item(rng, f"In the alphabet, the letter after {letters[i]} is", letters[i + 1], list(letters))
        for i in range(len(letters) - 1)
    ]
    return items


def main() -> None:
    for name, make in (("pressroom_facts", facts), ("pressroom_sequences", sequences)):
        items = make(random.Random(name))
        with (FOLDER / f"{name}.jsonl").open("w") as f:
            for item in items:
                f.write(json.dumps(item) + "\n")
        logger.info("%s: %d items", name, len(items))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()

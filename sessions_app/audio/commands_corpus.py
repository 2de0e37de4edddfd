"""The command domain the embedded recognizer's language model is built from.

PocketSphinx's general English model recognises synthetic or accented speech poorly, so the
embedded engine decodes with a small trigram model of the commands in CONTRACT section 2a,
over the vocabulary below. Phrases outside it are recognised badly or not at all: a deployment
that needs open dictation plugs in another engine (``RECOGNIZER_ENGINE``).

``python -m sessions_app.audio.commands_corpus`` rewrites ``commands.lm`` from this file.
"""

import io
import itertools
from pathlib import Path

ACTIVITIES = [
    "buy milk",
    "buy bread",
    "buy eggs",
    "buy coffee",
    "call mom",
    "call dad",
    "call the doctor",
    "call the dentist",
    "call john",
    "call anna",
    "pay the rent",
    "pay the bills",
    "walk the dog",
    "feed the cat",
    "water the plants",
    "book a table",
    "send the report",
    "send an email",
    "email john",
    "clean the kitchen",
    "pick up the kids",
    "take out the trash",
    "fix the bike",
    "check the mail",
    "wash the car",
    "do the laundry",
    "go to the gym",
    "go for a run",
    "cook dinner",
    "make lunch",
    "read a book",
    "finish the report",
    "prepare the slides",
    "renew my passport",
    "order pizza",
    "visit grandma",
    "charge my phone",
    "lock the door",
    "turn off the oven",
    "stretch",
    "drink water",
    "take my medicine",
    "clean my room",
    "write a letter",
    "pack my bag",
]
ITEMS = [
    "milk",
    "bread",
    "eggs",
    "apples",
    "bananas",
    "coffee",
    "tea",
    "butter",
    "cheese",
    "rice",
    "pasta",
    "tomatoes",
    "potatoes",
    "onions",
    "chicken",
    "fish",
    "juice",
    "water",
    "soap",
    "paper towels",
    "batteries",
    "a birthday card",
    "flowers",
]
NOTES = [
    "the meeting moved to friday",
    "the door code is four two one",
    "park on level three",
    "the wifi password is on the fridge",
    "call the bank on monday",
    "dinner is at seven",
    "the keys are in the drawer",
    "buy a gift for anna",
    "the train leaves at nine",
    "my flight is on tuesday",
    "the package arrives tomorrow",
    "the report is due next week",
]
NUMBERS = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "fifteen",
    "twenty",
    "thirty",
    "forty five",
]
MINUTES = ["fifteen", "thirty", "forty five"]
WHEN = (
    ["", "today", "tonight", "tomorrow", "tomorrow morning"]
    + [f"in {n} minutes" for n in NUMBERS]
    + [f"in {n} hours" for n in ["one", "two", "three"]]
    + ["in an hour", "in a minute"]
    + [f"at {h}" for h in NUMBERS[:12]]
    + [f"at {h} {ap}" for h in NUMBERS[:12] for ap in ("a m", "p m")]
    + [f"at {h} {m}" for h in NUMBERS[:12] for m in MINUTES]
    + [f"at {h} o'clock" for h in NUMBERS[:12]]
    + [f"tomorrow at {h}" for h in NUMBERS[:12]]
)  # fmt: skip


def sentences() -> list[str]:
    out = []
    for what, when in itertools.product(ACTIVITIES, WHEN):
        out.append(f"remind me to {what} {when}".strip())
    for what in ACTIVITIES:
        out += [f"create a task to {what}", f"add a task to {what}", f"please remind me to {what}"]
    for item in ITEMS:
        out += [f"add {item} to my list", f"add {item} to my shopping list"]
    for note in NOTES:
        out += [f"take a note {note}", f"take a note that {note}", f"make a note {note}"]
    out += ["what is on my list", "what's on my list", "what is on my to do list"] * 20
    out += ["cancel the last task", "cancel the last reminder", "cancel last task"] * 20
    out += ["confirm", "yes", "yes please", "confirmed", "no"] * 20
    return out


def build_arpa() -> str:
    from pocketsphinx.lm import ArpaBoLM

    lm = ArpaBoLM(text="\n".join(sentences()), add_start=True, discount_mass=0.02)
    lm.compute()
    buf = io.StringIO()
    lm.write(buf)
    return buf.getvalue()


LM_PATH = Path(__file__).with_name("commands.lm")

if __name__ == "__main__":
    LM_PATH.write_text(build_arpa())
    print(f"wrote {LM_PATH} ({len(sentences())} sentences)")

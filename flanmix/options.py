"""Answer options and dialog blocks: flanmix's own option styles and FLAN's (`options_style: flan`).

An options block is the text a template shows as `{{ options_ }}`. With letter/number labels, the expected answer
may be rewritten to the label of the right option (`(B)`, `ii.`). Two named styles:

- `flanmix` (the default): `OPTIONS:\\n- a\\n- b`, or a seeded random style from 10 start strings, 10 item markers
  and 2 end strings; the answer is rewritten only in templates that show the block.
- `flan`: FLAN's own tables (16 start strings, 87 item-name lists, 3 item-end lists; `FLAN_*` below, as in
  google-research/FLAN `flan/v2/templates.py`, Apache-2.0). Deterministic `OPTIONS:\\n- a\\n- b` except in
  randomized zs_opt rows; the answer is rewritten whenever the stripped labels are distinct, in every template
  (FLAN rewrites the row before templating, so an inverted template showing the answer shows the label).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from flanmix.core.errors import FlanmixError

OPTIONS_STYLES = ("flanmix", "flan")


def split_choices(value: Any) -> list[str]:
    """Options given as a list, or promptsource-style as one '|||'-separated string."""
    if isinstance(value, str):
        return [part.strip() for part in value.split("|||")]
    if isinstance(value, (list, tuple)):
        return list(map(str, value))
    raise FlanmixError(f"answer options must be a list or a '|||'-separated string, got {type(value).__name__}")


class OptionsBlock(NamedTuple):
    """Rendered answer options and, for distinct labels, the labels that may replace the answer."""

    text: str
    labels: tuple[str, ...] | None
    match_stripped: bool = False  # FLAN compares the stripped answer with the stripped options

    def label_for(self, answer: str, options: Sequence[str]) -> str | None:
        """The label standing for `answer`, or None when the answer keeps its text."""
        if self.labels is None:
            return None
        if self.match_stripped:
            wanted = answer.strip()
            for label, option in zip(self.labels, options):
                if option.strip() == wanted:
                    return label
            return None
        return self.labels[options.index(answer)] if answer in options else None


# ---------------------------------------------------------------------------------------------- flanmix style

OPTIONS_STARTS = (
    "OPTIONS:", "Options:", "Choose your answer from:", "Pick your answer from:", "Select from the following.",
    "Available choices:", "Choices:", "Possible answers:", "Choose from:", "Select from:",
)
# (marker format, kind): kind 'bullet' keeps the target; 'letter'/'number' rewrite the target to the marker.
OPTION_MARKERS = (
    ("- {}", "bullet"), ("* {}", "bullet"), ("+ {}", "bullet"),
    ("({L}) {}", "letter"), ("{L}. {}", "letter"), ("{L}) {}", "letter"), ("({l}) {}", "letter"),
    ("({N}) {}", "number"), ("{N}. {}", "number"), ("{N}) {}", "number"),
)
OPTIONS_ENDS = ("", "\n")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class OptionsStyle:
    """How an options block looks: start string, item marker ('- {}', '({L}) {}', ...) and end string."""

    start: str = "OPTIONS:"
    marker: str = "- {}"
    kind: str = "bullet"  # 'bullet' keeps the target; 'letter'/'number' rewrite the target to the marker
    end: str = ""

    def label(self, index: int) -> str:
        """The marker of option `index` without the item text, e.g. '(B)' or '2.'."""
        return self.mark(index, "").strip()

    def mark(self, index: int, item: str) -> str:
        """Option `index` with its marker."""
        letter = _LETTERS[index % 26]
        return (self.marker.replace("{L}", letter).replace("{l}", letter.lower())
                .replace("{N}", str(index + 1)).replace("{}", item))


DEFAULT_OPTIONS_STYLE = OptionsStyle()


def random_options_style(rng: random.Random) -> OptionsStyle:
    """A seeded random options style (Flan 2022 varies the start string, the item markers and the end string)."""
    marker, kind = OPTION_MARKERS[rng.randrange(len(OPTION_MARKERS))]
    return OptionsStyle(OPTIONS_STARTS[rng.randrange(len(OPTIONS_STARTS))], marker, kind,
                        OPTIONS_ENDS[rng.randrange(len(OPTIONS_ENDS))])


def format_options(options: Sequence[Any], style: OptionsStyle = DEFAULT_OPTIONS_STYLE) -> OptionsBlock:
    """Render answer options: by default `OPTIONS:` then `- a` lines."""
    items = [str(o) for o in options]
    lines = "\n".join(style.mark(i, item) for i, item in enumerate(items))
    labels = None if style.kind == "bullet" else tuple(style.label(i) for i in range(len(items)))
    return OptionsBlock(f"{style.start}\n{lines}{style.end}", labels)


# ------------------------------------------------------------------------------------------------- FLAN style

FLAN_OPTION_STARTS: tuple[str, ...] = (
    "", "OPTIONS:", "Possible answers:", "Available choices:", "Options:", "OPT:", "Choose from:",
    "Choose your answer from:", "Available options:", "Options are:", "Choices:", "Pick your answer from:",
    "Select from:", "Pick from:", "Select from the following.", "pick from the following.",
)
MAX_FLAN_OPTIONS = 26
_BULLETS = ("\n - ", "\n -", "\n -- ", "\n --", "\n + ", "\n +", "\n * ", "\n *", "\n- ", "\n+ ", "\n* ",
            "\n[-] ", "\n[+] ", " - ", " -- ", " + ", " * ", " -", " --", " +", " *", " [+] ", " [-] ")
_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII", "XIII", "XIV", "XV", "XVI",
          "XVII", "XVIII", "XIX", "XX", "XXI", "XXII", "XXIII", "XXIV", "XXV", "XXVI")
_ROMAN_FORMATS = (" {}. ", " [{}] ", " ({}) ", " ({}). ", "\n{}. ", "\n[{}] ", "\n({}) ", "\n({}). ")
_SEQUENCE_FORMATS = ("\n[{}]. ", "\n({}). ", "\n{}). ", "\n ({}). ", "\n {}). ", " ({}). ", " {}). ", " {}. ")
_SEQUENCES = (_LETTERS.lower(), _LETTERS, tuple(str(i) for i in range(1, 27)))


def _flan_option_names() -> tuple[tuple[str, ...], ...]:
    # FLAN's list order: bullets; roman lower then upper; then the letter/number formats, listed twice in FLAN
    # (its comments say ':' for the second copy, the strings are the same), which doubles their draw weight.
    names = [(bullet,) * MAX_FLAN_OPTIONS for bullet in _BULLETS]
    for case in (str.lower, str.upper):
        names += [tuple(fmt.format(case(r)) for r in _ROMAN) for fmt in _ROMAN_FORMATS]
    sequence_lists = [tuple(fmt.format(x) for x in seq) for fmt in _SEQUENCE_FORMATS for seq in _SEQUENCES]
    return tuple(names + sequence_lists * 2)


FLAN_OPTION_NAMES = _flan_option_names()
FLAN_OPTION_ENDS: tuple[tuple[str, ...], ...] = tuple((end,) * MAX_FLAN_OPTIONS for end in ("", ";", "."))


def flan_options_block(options: Sequence[str], rng: random.Random | None = None) -> OptionsBlock:
    """FLAN's options block: deterministic `OPTIONS:\\n- a\\n- b` without `rng`, else one seeded draw of a start
    string, an item-name list and an item-end list (3 draws, in that order)."""
    if rng is None or len(options) > MAX_FLAN_OPTIONS:
        # FLAN's tables stop at 26 items (FLAN itself fails on more); the deterministic block has no limit.
        return OptionsBlock("OPTIONS:\n- " + "\n- ".join(options), None)
    start = FLAN_OPTION_STARTS[rng.randrange(len(FLAN_OPTION_STARTS))]
    names = FLAN_OPTION_NAMES[rng.randrange(len(FLAN_OPTION_NAMES))][:len(options)]
    ends = FLAN_OPTION_ENDS[rng.randrange(len(FLAN_OPTION_ENDS))]
    text = start + "".join(name + option + end for name, option, end in zip(names, options, ends))
    labels = tuple(name.strip() for name in names)
    return OptionsBlock(text, labels if len(set(labels)) == len(labels) else None, match_stripped=True)


# ------------------------------------------------------------------------------------------------ FLAN dialog

FLAN_DIALOG_STARTS: tuple[str, ...] = (
    "", "DIALOG:", "Dialog:", "CONVERSATION:Conversation:",  # sic: FLAN's list lacks a comma here
    "Convo:", "Read the following conversation:", "A 2 person conversation:", "A 2 person dialog:",
    "A dialog between 2 people:", "See the 2 person dialog:", "Conversation transcript:", "Phone call:",
    "2-way dialog:",
)
MAX_DIALOG_TURNS = 999  # FLAN's name lists have 1,000 entries: one per turn plus the next speaker's
_DIALOG_PAIRS = (
    ("\n  A. ", "\n  B. "), ("\nA. ", "\nB. "), ("\n[A]. ", "\n[B]. "), ("\n[1]. ", "\n[2]. "),
    ("\n[a]. ", "\n[b]. "), ("\n(A) ", "\n(B) "), ("\n(1) ", "\n(2) "), ("\n[a]. ", "\n[b]. "),
    ("\n[x]. ", "\n[y]. "), ("\nSpeaker 1: ", "\nSpeaker 2: "), ("\nSpeaker A: ", "\nSpeaker B: "),
    ("\nPerson 1: ", "\nPerson 2: "), ("\nPerson A: ", "\nPerson B: "), ("\nSpeaker 1) ", "\nSpeaker 2) "),
    ("\nSpeaker A) ", "\nSpeaker B) "), ("\nPerson 1) ", "\nPerson 2) "), ("\nPerson A) ", "\nPerson B) "),
    ("\nAnonymous 1) ", "\nAnonymous 2) "), ("\nAnonymous A) ", "\nAnonymous B) "),
    ("\n  Person 1) ", "\n  Person 2) "), ("\n Person A) ", "\n Person B) "),
    ("\n Anonymous 1) ", "\n Anonymous 2) "), ("\n  Anonymous A) ", "\n  Anonymous B) "),
    ("\nPerson X: ", "\nPerson Y: "), ("\nSpeaker X) ", "\nSpeaker Y) "), ("\nP1: ", "\nP2: "),
    ("\n P1) ", "\n P2) "),
)
#: FLAN's 50 dialog item-name styles as (even turn, odd turn) names.
FLAN_DIALOG_NAMES: tuple[tuple[str, str], ...] = tuple((b, b) for b in _BULLETS) + _DIALOG_PAIRS
FLAN_DIALOG_ENDS: tuple[str, ...] = ("", ";", ".")


def flan_dialog_block(turns: Sequence[str], rng: random.Random | None = None) -> str:
    """FLAN's dialog block: `DIALOG:\\n` + turns joined by `\\n- ` + `\\n- ` without `rng`; else a seeded draw
    of a start string, a name style and an end string, each turn named, then the next speaker's name."""
    turns = [str(t) for t in turns]
    if rng is None:
        return "DIALOG:\n" + "\n- ".join(turns) + "\n- "
    if len(turns) > MAX_DIALOG_TURNS:
        raise FlanmixError(f"a dialog of {len(turns)} turns is longer than FLAN's tables allow",
                           field="dialog", expected=f"at most {MAX_DIALOG_TURNS} turns")
    start = FLAN_DIALOG_STARTS[rng.randrange(len(FLAN_DIALOG_STARTS))]
    names = FLAN_DIALOG_NAMES[rng.randrange(len(FLAN_DIALOG_NAMES))]
    end = FLAN_DIALOG_ENDS[rng.randrange(len(FLAN_DIALOG_ENDS))]
    body = "".join(names[i % 2] + turn + end for i, turn in enumerate(turns))
    return start + body + names[len(turns) % 2]

"""What evaluation works on: prompts with their references (`EvalItem`), grouped per task (`EvalSet`), and what it
needs from a model (`Scorer`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

GENERATIVE = ("exact_match", "contains", "cot_exact_match")  # metrics scored on a greedy generation
DEFAULT_MAX_NEW_TOKENS = 64       # cap for direct answers (the budget is also bounded by the longest reference)
DEFAULT_COT_MAX_NEW_TOKENS = 256  # rationales are longer
FEWSHOT_STOP = ("\n\n",)          # after a few-shot answer the model would start the next exemplar
# Suites scored as lm-evaluation-harness scores them by default: no EOS after an option, a prompt's trailing
# whitespace moved onto the option, `acc_norm` by characters (see `lm_eval_request`); flanmix's own tasks keep
# flanmix's documented default (EOS scored).
LM_EVAL_SOURCES = ("mmlu", "bbh", "bigbench")


@dataclass
class EvalItem:
    """One prompt to score, with what it is compared against."""

    prompt: str
    reference: str                     # the expected generation (rendered target; for CoT the final answer)
    metrics: tuple[str, ...]           # which metrics this item feeds
    options: list[str] | None = None   # for rank classification (continuations of the prompt)
    answer_index: int | None = None    # the correct option
    stop: tuple[str, ...] = ()         # generation stop strings
    example_id: str = ""
    cot: bool = False
    budget_text: str | None = None     # the longest text a good answer needs (sets the generation budget)
    alternatives: tuple[str, ...] = ()  # further accepted answers (BIG-bench lists several targets)


@dataclass
class EvalSet:
    """The items of one task (a registered task, a BBH file, an MMLU subject or a BIG-bench task)."""

    name: str
    cluster: str
    source: str                        # "registry" | "bbh" | "mmlu" | "bigbench"
    items: list[EvalItem]
    primary: str
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    max_new_tokens: dict[bool, int] = field(default_factory=dict)  # cot? -> budget (filled by the runner)


class Scorer(Protocol):
    """What evaluation needs from a model (`scorer.ModelScorer`; tests inject stubs with these methods)."""

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int,
                 stop: Sequence[Sequence[str]]) -> list[str]: ...

    def rank(self, prompts: Sequence[str], options: Sequence[Sequence[str]], *,
             include_eos: bool | None = None) -> list[list[tuple[float, int]]]: ...

    def count_tokens(self, text: str) -> int: ...


def lm_eval_request(prompt: str, option: str) -> tuple[str, str]:
    """(context, continuation) as lm-evaluation-harness scores them: whitespace at the end of the prompt belongs
    to the continuation (`HFLM._encode_pair`), so "Answer: " + "A" is scored as "Answer:" + " A"."""
    stripped = prompt.rstrip()
    return stripped, prompt[len(stripped):] + option


def choice_chars(option: str, delimiter: str = " ") -> int:
    """The length lm-evaluation-harness divides by for `acc_norm`: the choice's characters, without the target
    delimiter it puts before every choice."""
    return len(option) - len(delimiter) if option.startswith(delimiter) and len(option) > len(delimiter) \
        else len(option)

"""Few-shot prompts: flanmix's glue formats around a zero-shot template, and FLAN's few-shot patterns.

FLAN's patterns carry their own texts and glue. A prompt is
`Σ_k [inputs_prefix + x_k + x_y_delimiter + targets_prefix + y_k + example_separator]` +
`inputs_prefix + x + x_y_delimiter + targets_prefix`, placed into the pattern's `input_pattern`; then trailing
spaces (not newlines) are removed from the input and the target is stripped. Two modes:

- **x_shot**: 25 draws from the training rows, of which those rendered with the row's own pattern are kept
  (so Binomial(25, 1/N) exemplars for N patterns; the row itself may be drawn); the longest prefix that fits the
  budget minus the row's own length is kept; with none left the row is dropped (`FewShotDropped`).
- **template_mix**: 5 exemplars, each in a pattern drawn from those `in_template_mix`, joined by one separator
  per task ("\\n", "\\n\\n" or "\\n\\n\\n") instead of the patterns' `example_separator`.

A task may fix the x_shot count (`x_shot_exemplars`: exactly k distinct rows, no budget; FLAN's NIv2 draws 2 of the
row's own task) and replace template_mix by zero-shot templates with an inline exemplar (`template_mix_templates`).

Lengths are counted per exemplar with its glue (`len`, or a tokenizer's token count).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from flanmix.prompts import BlockMaker, CompiledTemplate, PromptSet, Rendered
from flanmix.spec import FewShotFormat, FewShotPattern

X_SHOT_DRAWS = 25
TEMPLATE_MIX_EXEMPLARS = 5
TEMPLATE_MIX_SEPARATORS = ("\n", "\n\n", "\n\n\n")
MODES = ("x_shot", "template_mix")
Counter = Callable[[str], int]


class TokenCounter:
    """Counts a text's tokens (no special tokens) with a `tokenizers.Tokenizer`; picklable for worker processes."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


class FewShotDropped(Exception):
    """No exemplar is left for a FLAN few-shot row (none drawn, or none fits the budget): FLAN drops the row."""


# ---------------------------------------------------------------------------------------------- flanmix glue

def glue_prompt(fmt: FewShotFormat, target: Rendered, shots: Iterable[Rendered], budget: int,
                count: Counter = len) -> str:
    """Exemplars glued by `fmt` before the target's input, within `budget` (one exemplar is always kept).

    `shots` is consumed lazily: exemplars after the budget is spent are never rendered."""
    texts: list[str] = []
    room = budget - count(target.inputs)
    for shot in shots:
        text = f"{fmt.inputs_prefix}{shot.inputs}{fmt.x_y_delimiter}{fmt.targets_prefix}{shot.targets}"
        if texts and count(text) + count(fmt.example_separator) > room:
            break
        room -= count(text) + count(fmt.example_separator)
        texts.append(text)
    # Only trailing spaces go: a targets_prefix ending in a newline keeps it (FLAN's rule).
    final = f"{fmt.inputs_prefix}{target.inputs}{fmt.x_y_delimiter}{fmt.targets_prefix.rstrip(' ')}"
    return fmt.example_separator.join([*texts, final]) + fmt.final_suffix


# ---------------------------------------------------------------------------------------------- FLAN patterns

def shot_text(pattern: FewShotPattern, x: str, y: str, separator: str | None = None) -> str:
    """One exemplar with its pattern's glue; `separator` replaces the pattern's example_separator (template_mix)."""
    end = pattern.example_separator if separator is None else separator
    return pattern.inputs_prefix + x + pattern.x_y_delimiter + pattern.targets_prefix + y + end


def query_text(pattern: FewShotPattern, x: str) -> str:
    """The row's own part of the prompt: `inputs_prefix + x + x_y_delimiter + targets_prefix`."""
    return pattern.inputs_prefix + x + pattern.x_y_delimiter + pattern.targets_prefix


def fit_budget(texts: Sequence[str], query: str, budget: int | None, count: Counter = len) -> list[str]:
    """The longest prefix of the exemplar `texts` (with their glue) whose lengths sum to at most `budget` minus the
    query's length."""
    if budget is None:
        return list(texts)
    room = budget - count(query)
    kept = []
    for text in texts:
        room -= count(text)
        if room < 0:
            break
        kept.append(text)
    return kept


def finish_input(assembled: str, tmpl: CompiledTemplate, context: dict[str, Any], rng: Any = None) -> str:
    """Place the assembled prompt into the pattern's input_pattern and remove trailing spaces."""
    pattern = tmpl.spec
    if tmpl.input_pattern is None:
        text = assembled + pattern.final_suffix
    else:
        text = str(tmpl.input_pattern({**context, "inputs": assembled, "final_suffix": pattern.final_suffix}, rng))
    return text.rstrip(" ")


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw from one uniform number (inverse CDF): the count of `n` Bernoulli(p) successes."""
    u, k, term = rng.random(), 0, (1.0 - p) ** n
    cdf = term
    while u >= cdf and k < n:
        term *= (n - k) / (k + 1) * p / (1.0 - p) if p < 1.0 else 0.0
        k += 1
        cdf += term
    return n if p >= 1.0 else k


def draw_x_shot(rng: random.Random, pool_size: int, num_patterns: int) -> list[int]:
    """Rows of an x_shot prompt: of 25 draws, those that FLAN renders with the row's own pattern."""
    count = binomial(rng, X_SHOT_DRAWS, 1.0 / max(1, num_patterns))
    return [rng.randrange(pool_size) for _ in range(count)]


def draw_fixed(rng: random.Random, pool_size: int, k: int, is_own: Callable[[int], bool]) -> list[int]:
    """Exactly `k` distinct rows of a pool, in random order (FLAN's NIv2 x_shot: 2 exemplars of the row's task);
    the row itself (`is_own`) only when the pool has fewer than `k` others. Raises `FewShotDropped` when the pool
    has fewer than `k` rows."""
    if pool_size < k:
        raise FewShotDropped(f"{pool_size} rows for {k} exemplars")
    # k + 1 draws, the row itself left out: the first k others are a uniform ordered sample of the others.
    picks = rng.sample(range(pool_size), min(pool_size, k + 1))
    kept = [p for p in picks if not is_own(p)][:k]
    return kept if len(kept) == k else picks[:k]


def draw_template_mix(rng: random.Random, pool_size: int, in_mix: Sequence[int]) -> list[tuple[int, int]]:
    """(row, pattern) of each template_mix exemplar."""
    return [(rng.randrange(pool_size), in_mix[rng.randrange(len(in_mix))]) for _ in range(TEMPLATE_MIX_EXEMPLARS)]


def template_mix_separator(rng: random.Random) -> str:
    """A task's template_mix separator (draw it from a per-task seed)."""
    return TEMPLATE_MIX_SEPARATORS[rng.randrange(len(TEMPLATE_MIX_SEPARATORS))]


def flan_prompt(prompts: PromptSet, items: Sequence[CompiledTemplate], idx: int, context: dict[str, Any],
                exemplars: Sequence[tuple[dict[str, Any], int]], *, make_block: BlockMaker | None, rng: Any,
                separator: str | None = None, budget: int | None = None, count: Counter = len,
                where: str = "") -> Rendered:
    """A FLAN few-shot prompt for one row rendered with pattern `items[idx]`.

    `exemplars` are (row context, pattern index) pairs, already drawn; `separator` is given in template_mix mode.
    Raises `FewShotDropped` when no exemplar is left after the budget.
    """
    tmpl = items[idx]
    row = prompts.render_one(dict(context), tmpl, make_block, rng, where=where)
    texts = []
    for shot_context, shot_idx in exemplars:
        shot_tmpl = items[shot_idx]
        out = prompts.render_one(dict(shot_context), shot_tmpl, make_block, rng, where=where)
        texts.append(shot_text(shot_tmpl.spec, out.inputs, out.targets, separator))
    query = query_text(tmpl.spec, row.inputs)
    kept = fit_budget(texts, query, budget, count)
    if not kept:
        raise FewShotDropped(f"no exemplar left for row {where}")
    # FLAN strips the target with tf.strings.strip: ASCII whitespace only (a trailing no-break space stays).
    return Rendered(finish_input("".join(kept) + query, tmpl, context, rng), row.targets.strip(" \t\n\r\v\f"),
                    row.options, row.answer)

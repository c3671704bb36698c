"""The bundled synthetic tasks: every task loads, renders in every variant, is deterministic, and every answer is
re-derived here by independent code (parsing the question text or brute force), never by calling the generators.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter

import pytest

from flanmix.builtin.classification import CATEGORIES
from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.options import split_choices
from flanmix.registry import Registry, load_task_file
from flanmix.task import Task

CLUSTERS = ("arithmetic", "word_problems", "strings", "lists", "classification", "logic")


def ints(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


def parse_list(text: str) -> list[int]:
    return [int(x) for x in text.split(", ")]


def show(values) -> str:
    return ", ".join(str(v) for v in values)


# ------------------------------------------------------------------------------------ independent answer checks

def _binary(pattern: str, op):
    def check(row: dict) -> str:
        match = re.fullmatch(pattern, row["question"])
        assert match, row["question"]
        return str(op(int(match.group(1)), int(match.group(2))))
    return check


def _div(row: dict) -> str:
    n, d = map(int, re.fullmatch(r"(\d+) / (\d+)", row["question"]).groups())
    assert n % d == 0 and n == row["n"] and d == row["d"]
    return str(n // d)


def _expr(row: dict) -> str:
    assert re.fullmatch(r"[\d +\-*()]+", row["question"])
    return str(eval(row["question"], {"__builtins__": {}}))  # noqa: S307 - digits and operators only


def _two_step(row: dict) -> str:
    q = row["question"]
    numbers = ints(q)
    if " buys " in q:
        a, b, c = numbers
        assert a + b >= c
        return str(a + b - c)
    if " finds " in q:
        a, c, b = numbers
        assert a >= c
        return str(a - c + b)
    a, b = numbers
    assert "more" in q and "together" in q
    return str(a + (a + b))


def _shopping(row: dict) -> str:
    m = re.search(r"costs (\d+) dollars? and a \w+ costs (\d+) dollars?\. \w+ buys (\d+) \w+ and (\d+) \w+\.",
                  row["question"])
    p1, p2, n1, n2 = map(int, m.groups())
    return str(p1 * n1 + p2 * n2)


def _change(row: dict) -> str:
    m = re.search(r"buys (\d+) \w+ at (\d+) dollars? each and pays with a (\d+)-dollar bill", row["question"])
    n, p, bill = map(int, m.groups())
    assert bill >= n * p
    return str(bill - n * p)


def _share(row: dict) -> str:
    m = re.search(r"has (\d+) \w+ with (\d+) \w+ in each\..* among (\d+) friends", row["question"])
    b, k, m_ = map(int, m.groups())
    assert (b * k) % m_ == 0
    return str(b * k // m_)


def _age(row: dict) -> str:
    m = re.search(r"is (\d+) years old\. \w+ \w+ is (\d+) years? (older|younger)\. How old "
                  r"(?:will the \w+ be in (\d+) years?|was the \w+ (\d+) years? ago)\?$", row["question"])
    a, d = int(m.group(1)), int(m.group(2))
    now = a + d if m.group(3) == "older" else a - d
    result = now + int(m.group(4)) if m.group(4) else now - int(m.group(5))
    assert now > 0 and result >= 0
    return str(result)


def _upper(row: dict) -> str:
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in row["text"])


def _char_at(row: dict) -> str:
    ordinals = "first second third fourth fifth sixth seventh eighth".split()
    assert ordinals.index(row["ordinal"]) + 1 == row["position"]
    return row["word"][row["position"] - 1]


def _palindrome(row: dict) -> str:
    w = row["word"]
    return "yes" if all(w[i] == w[len(w) - 1 - i] for i in range(len(w))) else "no"


def _items(row: dict) -> list[int]:
    values = parse_list(row["items"])
    assert values == row["numbers"]
    return values


def _filter_even(row: dict) -> str:
    evens = [v for v in _items(row) if v % 2 == 0]
    return show(evens) if evens else "none"


POSITIVE = {"good", "great", "fun", "nice", "lovely", "amazing", "wonderful", "excellent"}
NEGATIVE = {"bad", "awful", "boring", "dull", "poor", "terrible", "horrible", "weak"}


def _sentiment(row: dict) -> str:
    words = row["sentence"].rstrip(".").replace(",", "").split()
    polar = [w for w in words if w in POSITIVE | NEGATIVE]
    assert len(polar) == 1, row["sentence"]
    positive = (polar[0] in POSITIVE) != ("not" in words)
    return "positive" if positive else "negative"


def _odd_one_out(row: dict) -> str:
    words = row["items"].split(", ")
    category = {w: c for c, members in CATEGORIES.items() for w in members}
    counts = Counter(category[w] for w in words)
    (majority, three), (_, one) = counts.most_common()
    assert (three, one) == (3, 1)
    return next(w for w in words if category[w] != majority)


def _bool_expr(row: dict) -> str:
    assert re.fullmatch(r"(?:True|False|and|or|not|[() ])+", row["expression"])
    return str(eval(row["expression"], {"__builtins__": {}}))  # noqa: S307 - booleans and operators only


def _variables(row: dict) -> str:
    values = {}
    for part in row["assignment"].split(", "):
        name, value = part.split(" = ")
        values[name] = {"True": True, "False": False}[value]
    assert re.fullmatch(r"(?:[pqrxyz]|and|or|not|[() ])+", row["expression"])
    return str(eval(row["expression"], {"__builtins__": {}}, values))  # noqa: S307


def _implication(row: dict) -> str:
    """Model checking: every (P, Q) world consistent with the rule and the fact; does the asked one hold in all?"""
    rule = re.match(r"If the (\w+) is (\w+), then the (\w+) is (\w+)\. The (\w+) is (not )?(\w+)\.$", row["context"])
    s1, a1, s2, a2, fs, fneg, fa = rule.groups()
    ask = re.fullmatch(r"Is the (\w+) (\w+)\?", row["ask"]).groups()
    atoms = {(s1, a1): 0, (s2, a2): 1}
    worlds = [w for w in itertools.product([True, False], repeat=2)
              if (not w[0] or w[1]) and w[atoms[(fs, fa)]] == (fneg is None)]
    asked = {w[atoms[ask]] for w in worlds}
    return "unknown" if len(asked) == 2 else "yes" if asked == {True} else "no"


COMPARATIVES = {"taller": ("tallest", "shortest"), "older": ("oldest", "youngest"), "faster": ("fastest", "slowest"),
                "heavier": ("heaviest", "lightest")}
LESS = {"shorter": "taller", "younger": "older", "slower": "faster", "lighter": "heavier"}


def _order(row: dict) -> str:
    """Brute force over the orderings of the three people consistent with both facts."""
    facts = re.findall(r"(\w+) is (\w+) than (\w+)\.", row["facts"])
    names = sorted({n for f in facts for n in (f[0], f[2])})
    above = set()
    for x, rel, y in facts:
        above.add((x, y) if rel in COMPARATIVES else (y, x))
    relation = next(r if r in COMPARATIVES else LESS[r] for _, r, _ in facts)
    consistent = [p for p in itertools.permutations(names)
                  if all(p.index(hi) < p.index(lo) for hi, lo in above)]
    assert len(consistent) == 1
    most, least = COMPARATIVES[relation]
    assert row["superlative"] in (most, least)
    return consistent[0][0] if row["superlative"] == most else consistent[0][-1]


def _count_true(row: dict) -> str:
    total = 0
    for statement in row["statements"].split("; "):
        a, op, b = statement.split()
        total += {"<": int(a) < int(b), ">": int(a) > int(b), "=": int(a) == int(b)}[op]
    return str(total)


CHECKS = {
    "arith_add": _binary(r"(\d+) \+ (\d+)", lambda a, b: a + b),
    "arith_sub": _binary(r"(\d+) - (\d+)", lambda a, b: a - b),
    "arith_mul": _binary(r"(\d+) \* (\d+)", lambda a, b: a * b),
    "arith_div": _div,
    "arith_expr": _expr,
    "wp_two_step": _two_step,
    "wp_shopping": _shopping,
    "wp_change": _change,
    "wp_share": _share,
    "wp_age": _age,
    "str_reverse": lambda r: "".join(r["word"][i] for i in range(len(r["word"]) - 1, -1, -1)),
    "str_upper": _upper,
    "str_length": lambda r: str(sum(1 for _ in r["word"])),
    "str_count_char": lambda r: str(sum(c == r["letter"] for c in r["word"])),
    "str_char_at": _char_at,
    "str_palindrome": _palindrome,
    "list_sort": lambda r: show(sorted(_items(r))),
    "list_max": lambda r: str(max(_items(r))),
    "list_min": lambda r: str(min(_items(r))),
    "list_sum": lambda r: str(sum(_items(r))),
    "list_reverse": lambda r: show(_items(r)[::-1]),
    "list_count": lambda r: str(_items(r).count(r["value"])),
    "list_filter_even": _filter_even,
    "cls_sentiment": _sentiment,
    "cls_odd_one_out": _odd_one_out,
    "cls_parity": lambda r: "even" if r["n"] % 2 == 0 else "odd",
    "cls_larger": lambda r: str(r["a"] if r["a"] > r["b"] else r["b"]),
    "cls_longer_word": lambda r: r["first"] if len(r["first"]) > len(r["second"]) else r["second"],
    "logic_bool_expr": _bool_expr,
    "logic_variables": _variables,
    "logic_implication": _implication,
    "logic_order": _order,
    "logic_count_true": _count_true,
}


# ------------------------------------------------------------------ rationale checks: the steps reach the answer

def _last_int(row: dict) -> str:
    return str(ints(row["rationale"])[-1])


def _column(row: dict) -> str:
    """Column arithmetic: the tens result followed by the ones digit written (or the one-line sum)."""
    r = row["rationale"]
    tens = re.search(r"Tens: .* = (\d+)\.$", r)
    if not tens:
        return _last_int(row)
    ones = re.search(r"Ones: .*?= (\d+)", r).group(1)
    return str(int(tens.group(1)) * 10 + int(ones) % 10)


def _last_truth(row: dict) -> str:
    return re.findall(r"= (True|False)\.", row["rationale"])[-1]


def _positions(row: dict) -> str:
    found = re.search(r"position[s]? ([\d, ]+)\.$", row["rationale"])
    return str(len(found.group(1).split(", "))) if found else "0"


def _implication_conclusion(row: dict) -> str:
    if row["rationale"].endswith("so we cannot tell."):
        return "unknown"
    conclusion = row["rationale"].rsplit(", so ", 1)[1]
    return "no" if " is not " in conclusion else "yes"


def _order_ends(row: dict) -> str:
    most, least, first, _, last = re.fullmatch(r"From (\w+) to (\w+) the order is (\w+), (\w+), (\w+)\.",
                                                row["rationale"]).groups()
    assert row["superlative"] in (most, least)
    return first if row["superlative"] == most else last


RATIONALE_CHECKS = {
    "arith_add": _column,
    "arith_sub": _column,
    "arith_mul": _last_int,
    "arith_div": _last_int,
    "arith_expr": _last_int,
    "wp_two_step": _last_int,
    "wp_shopping": _last_int,
    "wp_change": _last_int,
    "wp_share": _last_int,
    "wp_age": _last_int,
    "str_reverse": lambda r: r["rationale"].split("Backwards they are ")[1].rstrip(".").replace(" ", ""),
    "str_length": _last_int,
    "str_count_char": _positions,
    "str_palindrome": lambda r: "yes" if r["rationale"].endswith("the same word.") else "no",
    "list_sort": lambda r: show(re.findall(r"is (\d+)\.", r["rationale"])),
    "list_max": _last_int,
    "list_min": _last_int,
    "list_sum": _last_int,
    "list_count": _positions,
    "cls_odd_one_out": lambda r: re.search(r"but (\w+) is", r["rationale"]).group(1),
    "cls_parity": lambda r: r["rationale"].rstrip(".").split()[-1],
    "cls_longer_word": lambda r: (r["first"] if ints(r["rationale"])[0] > ints(r["rationale"])[1] else r["second"]),
    "logic_bool_expr": _last_truth,
    "logic_variables": _last_truth,
    "logic_implication": _implication_conclusion,
    "logic_order": _order_ends,
    "logic_count_true": lambda r: str(r["rationale"].count("is true.")),
}


# ------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover(env=False, python=False)


@pytest.fixture(scope="module")
def bundled(registry) -> list[Task]:
    return [t for t in registry if t.cluster in CLUSTERS and t.spec.source.kind == "builtin"]


def all_rows(task: Task) -> list:
    return task.examples("train") + task.examples("validation")


# ---------------------------------------------------------------------------------------------------- tests

def test_counts_and_coverage(bundled):
    names = {t.name for t in bundled}
    assert len(bundled) >= 24
    assert len({t.cluster for t in bundled}) >= 6
    assert names == set(CHECKS), "every bundled task needs an independent answer check (and vice versa)"
    assert {t.name for t in bundled if t.has_cot} == set(RATIONALE_CHECKS)
    assert sum(t.has_cot for t in bundled) >= 15
    assert sum(t.has_options for t in bundled) >= 10


def test_spec_metadata_and_template_counts(bundled):
    for task in bundled:
        spec, where = task.spec, task.name
        assert spec.description and spec.license == "Apache-2.0", where
        assert re.fullmatch(r"[a-z]+(_[a-z0-9]+)+", spec.name), where
        assert spec.source.examples >= 2000, where
        assert len(task.templates.zero_shot) >= 5, where
        assert task.template_indices(inverted=True), f"{where}: needs an inverted template"
        assert len(task.template_indices(inverted=False)) >= 4, where
        assert len(task.templates.few_shot) >= 2, where
        assert "exact_match" in spec.metrics, where
        assert ("rank_classification" in spec.metrics) == bool(spec.options_field), where
        assert ("cot_exact_match" in spec.metrics) == task.has_cot, where
        if task.has_cot:
            assert len(task.templates.cot) >= 2, where
        if spec.options_field:
            # Every non-inverted template shows the options in *_opt variants.
            for tmpl in task.templates.zero_shot + task.templates.cot:
                assert tmpl.inverted or "options_" in tmpl.input, (where, tmpl.input)
                # The renderer may rewrite `answer` to an option label; inverted prompts must not quote it.
                assert not (tmpl.inverted and re.search(r"\{\{[^}]*\banswer\b", tmpl.input)), (where, tmpl.input)


def test_answers_match_independent_recomputation(bundled):
    for task in bundled:
        check = CHECKS[task.name]
        answer_field = task.spec.answer_field
        rows = all_rows(task)
        assert task.examples("train") and task.examples("validation"), task.name
        distinct = {json.dumps(e.raw, sort_keys=True) for e in rows}
        assert len(distinct) >= 400, f"{task.name}: only {len(distinct)} distinct rows"
        for example in rows:
            context = task.context(example)
            expected = check(context)
            assert str(context[answer_field]) == expected, (task.name, example.example_id, context)
            if task.spec.options_field:
                options = split_choices(context[task.spec.options_field])
                assert expected in options and len(set(options)) == len(options), (task.name, context)
                assert str(context["answer_text"]) == expected
            if task.has_cot:
                assert RATIONALE_CHECKS[task.name](context) == expected, (task.name, context)


def test_inputs_and_targets_are_short(bundled):
    for task in bundled:
        for example in task.examples("train")[:200]:
            for idx in task.template_indices(inverted=False):
                rendered = task.render_full(example, template_type="zs_noopt", template_idx=idx)
                assert len(rendered.inputs) <= 170 and len(rendered.targets) <= 30, (task.name, rendered)
            for idx in task.template_indices(cot=True):
                rendered = task.render_full(example, template_type="zs_noopt", template_idx=idx, cot=True)
                assert len(rendered.targets) <= 220, (task.name, rendered.targets)


def _check_render(task: Task, example, variant: str, idx: int, cot: bool, randomize: bool) -> None:
    rendered = task.render_full(example, template_type=variant, template_idx=idx, cot=cot,
                                randomize_options=randomize)
    where = (task.name, variant, idx, cot, randomize, example.example_id)
    inverted = (task.templates.cot if cot else task.templates.zero_shot)[idx].inverted
    assert rendered.inputs and rendered.targets, where
    assert "{{" not in rendered.inputs and "{%" not in rendered.inputs, where
    expected = CHECKS[task.name](task.context(example))
    zs = task.render_full(example, template_type="zs_opt" if variant.endswith("_opt") else "zs_noopt",
                          template_idx=idx, cot=cot, randomize_options=randomize)
    if variant.startswith("fs") and not randomize:  # randomized option styles differ between zs and fs renders
        assert rendered.targets == zs.targets, where
        assert rendered.inputs.rfind(zs.inputs) > 0, where  # the target comes after >= 1 exemplar
    shows_options = variant.endswith("_opt") and bool(task.spec.options_field) and not inverted
    if shows_options:
        if not randomize:
            assert "OPTIONS:" in rendered.inputs, where
        if rendered.answer != expected:
            # A letter/number marker replaced the answer: the marker must label the right option.
            assert randomize and re.search(rf"^{re.escape(rendered.answer)} {re.escape(expected)}$",
                                           rendered.inputs, re.M), where
    else:
        assert "OPTIONS:" not in rendered.inputs, where
        if not inverted:
            assert rendered.answer == expected, where
    if inverted:
        return
    if cot:
        assert rendered.targets.endswith(f"{rendered.answer}."), where
        assert task.context(example)["rationale"] in rendered.targets, where
    else:
        assert rendered.targets == rendered.answer, where


def test_every_template_renders_in_every_variant(bundled):
    for task in bundled:
        examples = task.examples("train")[:2] + task.examples("validation")[:1]
        for cot in ([False, True] if task.has_cot else [False]):
            for idx in task.template_indices(cot=cot):
                for variant in TEMPLATE_TYPES:
                    for example in examples:
                        for randomize in (False, True):
                            _check_render(task, example, variant, idx, cot, randomize)


def test_rendering_is_deterministic_and_seeded(bundled):
    for task in bundled:
        fresh = load_task_file(task.spec_file)
        assert [e.raw for e in fresh.examples()[:50]] == [e.raw for e in task.examples()[:50]], task.name
        seen_difference = False
        for example in task.examples()[:4]:
            for variant in TEMPLATE_TYPES:
                for cot in ([False, True] if task.has_cot else [False]):
                    kwargs = dict(template_type=variant, template_idx=0, cot=cot, randomize_options=True)
                    first = task.render(example, seed=3, **kwargs)
                    again = fresh.render(fresh.examples()[task.examples().index(example)], seed=3, **kwargs)
                    assert first == again, (task.name, variant)
                    if variant.startswith("fs") and task.render(example, seed=4, **kwargs) != first:
                        seen_difference = True
        assert seen_difference, f"{task.name}: the render seed changes nothing"


def test_generator_seed_changes_rows(bundled):
    for task in bundled:
        source = task.spec.source.model_copy(update={"seed": task.spec.source.seed + 1, "examples": 50})
        spec = task.spec.model_copy(update={"source": source})
        other = Task(spec, task.templates, spec_file=task.spec_file)
        again = Task(spec, task.templates, spec_file=task.spec_file)
        rows = [e.raw for e in other.examples() + other.examples("validation")]
        assert rows == [e.raw for e in again.examples() + again.examples("validation")], task.name
        base = {e.example_id: e.raw for e in all_rows(task)}
        assert any(base[e.example_id] != e.raw for e in other.examples() + other.examples("validation")), task.name


def test_categories_are_disjoint():
    words = [w for members in CATEGORIES.values() for w in members]
    assert len(words) == len(set(words))

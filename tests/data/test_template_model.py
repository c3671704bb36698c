"""The template model FLAN needs, on hand-written tasks: per-variant template lists, few-shot patterns in both
modes with a character or token budget, `strip: false`, `options_style: flan`, the dialog block, inverted
templates as an annotation, inversion tasks mixed at a ratio, and provenance in the manifest."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import yaml

from flanmix.batch import Resolver, render_request
from flanmix.core.errors import FlanmixError
from flanmix.fewshot import FewShotDropped, glue_prompt
from flanmix.importers.flan import flan_to_jinja
from flanmix.mixture import build
from flanmix.options import FLAN_OPTION_ENDS, FLAN_OPTION_NAMES, FLAN_OPTION_STARTS, flan_options_block
from flanmix.prompts import Rendered
from flanmix.registry import Registry, load_task_file
from flanmix.spec import FewShotFormat
from helpers import write_fruit_task

PATTERN = {"inputs_prefix": "Q: ", "targets_prefix": "A:\n", "x_y_delimiter": "\n", "example_separator": "\n\n"}
TEMPLATES = {
    "strip": False,
    "options_style": "flan",
    "zero_shot": [
        {"input": "Is {{ word }} a fruit?  \n{{ options_ }}", "target": " {{ answer }}", "source": "hand:zs[0]"},
        {"input": "Name a thing whose answer is {{ answer }}.", "target": "{{ word }}", "inverted": True},
    ],
    "zero_shot_no_options": [
        {"input": "Fruit or not: {{ word }}", "target": "{{ answer }}"},
        {"input": "Name something; the answer is {{ answer }}.", "target": "{{ word }}", "inverted": True},
    ],
    "few_shot_patterns": [
        {"input": "{{ word }}?\n{{ options_ }}", "target": "{{ answer }}", **PATTERN},
        {"input": "Word: {{ word }}", "target": "{{ answer }}", "in_template_mix": False,
         "input_pattern": "Task: fruit.\n{{ inputs }}{{ final_suffix }}", "final_suffix": " ", **PATTERN},
        {"input": "[{{ word }}]", "target": "{{ answer }}", "inputs_prefix": "In: ", "targets_prefix": "Out: "},
    ],
}


def write_registry(root: Path, templates: dict = TEMPLATES, *, name: str = "fruit", rows: int = 24,
                   extra: str = "") -> Path:
    """A file-sourced task with inline templates (answer options yes/no) in registry folder `root`."""
    return write_fruit_task(root, templates, name=name, rows=rows, extra=extra, turns=True)


@pytest.fixture()
def task(tmp_path):
    return load_task_file(write_registry(tmp_path / "reg"), registry_root=tmp_path / "reg")


def render(task, idx=0, variant="zs_opt", example=0, **kw):
    return task.render_full(task.examples()[example], template_type=variant, template_idx=idx, **kw)


# ---------------------------------------------------------------------------------------------- variants

def test_each_variant_has_its_own_list_and_whitespace_is_kept(task):
    assert [task.num_templates(template_type=t) for t in ("zs_opt", "zs_noopt", "fs_opt", "fs_noopt")] == [2, 2, 3, 3]
    assert not task.same_templates_in_every_variant()
    opt = render(task)
    assert opt.inputs == "Is apple0 a fruit?  \nOPTIONS:\n- yes\n- no" and opt.targets == " yes"  # strip: false
    noopt = render(task, variant="zs_noopt")
    assert noopt.inputs == "Fruit or not: apple0" and noopt.targets == "yes"
    assert task.template_indices(inverted=True) == [1]
    assert task.template_indices(template_type="fs_opt", inverted=False) == [0, 1, 2]
    assert task.provenance() == {"zero_shot": ["hand:zs[0]", None]}
    with pytest.raises(FlanmixError, match="out of range"):
        render(task, idx=3, variant="fs_opt")


def test_without_a_no_options_list_the_options_block_is_blanked(tmp_path):
    templates = {k: v for k, v in TEMPLATES.items() if k != "zero_shot_no_options"}
    task = load_task_file(write_registry(tmp_path, templates), registry_root=tmp_path)
    assert render(task, variant="zs_noopt").inputs == "Is apple0 a fruit?  \n"
    fs_noopt = render(task, idx=0, variant="fs_noopt", fewshot_mode="x_shot", seed=1)
    assert "OPTIONS" not in fs_noopt.inputs


@pytest.mark.parametrize("change, message", [
    ({"zero_shot_no_options": TEMPLATES["zero_shot_no_options"][:1]}, "zero_shot_no_options has 1 templates"),
    ({"few_shot_patterns_no_options": TEMPLATES["few_shot_patterns"][:2]}, "as many patterns"),
    ({"template_mix": 1.5}, "template_mix"), ({"options_style": "fancy"}, "options_style"),
])
def test_template_set_shape_errors_name_the_field(tmp_path, change, message):
    spec = write_registry(tmp_path, TEMPLATES)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "fruit.yaml").write_text(yaml.safe_dump({**TEMPLATES, **change}, sort_keys=False))
    spec.write_text(spec.read_text().split("templates:")[0] + "templates: fruit\n")
    with pytest.raises(FlanmixError, match=message) as info:
        load_task_file(spec, registry_root=tmp_path)
    assert "templates/fruit.yaml" in str(info.value) and "\n" not in str(info.value)


def test_no_few_shot_patterns_means_no_few_shot_rows(tmp_path):
    templates = {**TEMPLATES, "few_shot_patterns": []}
    spec = write_registry(tmp_path / "reg", templates)
    task = load_task_file(spec, registry_root=tmp_path / "reg")
    assert task.variants() == ["zs_opt", "zs_noopt"]
    manifest = build({"seed": 1, "size": {"examples": 40}, "components": [{"task": "fruit"}]}, tmp_path / "out",
                     registry=Registry.discover([tmp_path / "reg"], bundled=False, env=False, python=False),
                     fmt="jsonl", progress=False)
    assert set(manifest["fallbacks"]["task:fruit fruit"]) == {"fs_opt->zs_opt (no few-shot templates)",
                                                             "fs_noopt->zs_noopt (no few-shot templates)"}
    rows = [json.loads(line) for line in (tmp_path / "out" / "train-00000.jsonl").read_text().splitlines()]
    assert {r["template_type"] for r in rows} == {"zs_opt", "zs_noopt"}


# ---------------------------------------------------------------------------------------------- few-shot

def test_x_shot_uses_the_rows_pattern_and_the_flan_formula(task):
    for seed in range(30):
        try:
            out = render(task, idx=0, variant="fs_opt", seed=seed, fewshot_mode="x_shot")
        except FewShotDropped:
            continue
        shots = out.inputs.split("\n\n")
        assert shots[-1] == "Q: apple0?\nOPTIONS:\n- yes\n- no\nA:\n"  # the targets_prefix keeps its newline
        assert all(re.fullmatch(r"Q: \w+\?\nOPTIONS:\n- yes\n- no\nA:\n(yes|no)", s) for s in shots[:-1]), shots
        assert out.targets == "yes"
    pattern = render(task, idx=1, variant="fs_opt", seed=3, fewshot_mode="template_mix")  # not in the mix
    assert pattern.inputs.startswith("Task: fruit.\nQ: Word: ") and pattern.inputs.endswith("A:\n")


def test_template_mix_draws_in_mix_patterns_and_one_separator_per_task(task):
    separators, patterns = set(), set()
    for example in range(20):  # one mixture seed: one separator for the task
        out = render(task, idx=2, variant="fs_opt", seed=7, fewshot_mode="template_mix", example=example)
        query = f"In: [{task.examples()[example].raw['word']}]\n\nOut:"
        assert out.inputs.endswith(query)
        body = out.inputs[:-len(query)]
        patterns |= {"Q" if part.startswith("Q: ") else "In" for part in re.findall(r"(?:^|\n)(Q: |In: )", body)}
        separators.add(re.search(r"(yes|no)(\n+)(Q: |In: )", out.inputs).group(2))
        assert "Word:" not in out.inputs  # pattern 1 is not in_template_mix
    assert patterns == {"Q", "In"} and len(separators) == 1
    other = {re.search(r"(yes|no)(\n+)(Q: |In: )", render(task, idx=2, variant="fs_opt", seed=s,
                                                           fewshot_mode="template_mix").inputs).group(2)
             for s in range(30)}
    assert other == {"\n", "\n\n", "\n\n\n"}  # drawn per task and seed


def test_the_budget_counts_characters_or_tokens_and_drops_rows_without_exemplars(tmp_path):
    spec = write_registry(tmp_path, extra="few_shot_max_chars: 80\nfew_shot_max_tokens: 30\n")
    task = load_task_file(spec, registry_root=tmp_path)
    kept, dropped = 0, 0
    for seed in range(60):
        try:
            out = render(task, idx=0, variant="fs_opt", seed=seed, fewshot_mode="x_shot")
            kept += 1
            assert out.inputs.count("Q: ") == 2  # the row (34 characters) and one exemplar (39) fit 80
        except FewShotDropped:
            dropped += 1
    assert kept > 50 and dropped == 60 - kept

    def words(text: str) -> int:
        return len(text.split())

    counts = set()
    for seed in range(20):
        try:
            out = render(task, idx=0, variant="fs_opt", seed=seed, fewshot_mode="x_shot", count_tokens=words)
        except FewShotDropped:
            continue
        counts.add(out.inputs.count("Q: "))  # the row is 8 words, an exemplar 9: at most two fit 30
    assert counts == {3} or counts == {2, 3}


def test_glue_formats_keep_a_newline_ending_targets_prefix():
    fmt = FewShotFormat(inputs_prefix="Q: ", targets_prefix="A: \n", x_y_delimiter="\n", example_separator="\n\n")
    target = Rendered("x", "y", None, "y")
    assert glue_prompt(fmt, target, [Rendered("a", "b", None, "b")], 1000) == "Q: a\nA: \nb\n\nQ: x\nA: \n"
    spaces = FewShotFormat(inputs_prefix="Q: ", targets_prefix="A:  ")
    assert glue_prompt(spaces, target, [], 1000).endswith("\nA:")


# ---------------------------------------------------------------------------------------------- options, dialog

def test_flan_options_randomize_zs_opt_only_and_rewrite_the_answer_everywhere(task):
    blocks, labels, inverted_labels = set(), set(), 0
    for seed in range(300):
        example = seed % len(task.examples())
        truth = "yes" if task.examples()[example].raw["label"] else "no"
        out = render(task, seed=seed, randomize_options=True, example=example)
        block = out.inputs.split("?  \n", 1)[1]
        blocks.add(block)
        assert out.targets == " " + out.answer
        if out.answer != truth:  # rewritten to the label FLAN shows before the right option
            labels.add(out.answer)
            assert re.search(re.escape(out.answer) + r"\s*" + truth, block), (block, out.answer)
        inverted = render(task, idx=1, seed=seed, randomize_options=True, example=example)
        assert inverted.inputs == f"Name a thing whose answer is {inverted.answer}."  # FLAN rewrites the row
        inverted_labels += inverted.answer != truth
        fs = render(task, idx=0, variant="fs_opt", seed=seed, randomize_options=True, example=example,
                    fewshot_mode="template_mix")
        assert "OPTIONS:\n- yes\n- no" in fs.inputs and fs.answer == truth  # fs_opt: deterministic block
    assert len(blocks) > 100 and len(labels) > 20 and inverted_labels > 50


def test_flan_options_block_draws_from_flans_tables():
    rng = random.Random(0)
    combos = {s + "".join(n + o + e for n, o, e in zip(names, ["a ", "b"], ends)): (names, s)
              for s in FLAN_OPTION_STARTS for names in FLAN_OPTION_NAMES for ends in FLAN_OPTION_ENDS}
    for _ in range(500):
        block = flan_options_block(["a ", "b"], rng)
        names, _ = combos[block.text]
        stripped = [n.strip() for n in names[:2]]
        assert block.labels == (tuple(stripped) if len(set(stripped)) == 2 else None)
        assert block.label_for("a", ["a ", "b"]) == (stripped[0] if block.labels else None)
    assert flan_options_block(["x"] * 27, random.Random(0)).labels is None  # 27 options: deterministic block


def test_dialog_block_is_deterministic_unless_randomized(tmp_path):
    templates = {"zero_shot": [{"input": "{{ dialog_ }}", "target": "{{ answer }}"}], "strip": False}
    spec = write_registry(tmp_path, templates, extra="dialog_field: turns\n")
    task = load_task_file(spec, registry_root=tmp_path)
    assert render(task, variant="zs_noopt").inputs == "DIALOG:\nhi 0\n- hello {{ x }}  \n- "
    assert render(task, variant="fs_noopt", randomize_options=True).inputs.count("DIALOG:\n") >= 2
    seen = {render(task, variant="zs_noopt", seed=s, randomize_options=True).inputs for s in range(50)}
    assert len(seen) > 20 and all("hi 0" in s and "hello {{ x }}  " in s for s in seen)
    bad = write_registry(tmp_path / "bad", templates, extra="dialog_field: word\n")
    with pytest.raises(FlanmixError, match="not a list"):
        render(load_task_file(bad, registry_root=tmp_path / "bad"), variant="zs_noopt")


# ---------------------------------------------------------------------------------------------- conversion

def test_flan_placeholders_become_jinja_and_everything_else_stays_literal():
    assert flan_to_jinja("{premise}\n{options_}") == "{{ premise }}\n{{ options_ }}"
    assert flan_to_jinja("a {{b}} {% c %} {#d#} x") == "{{ 'a {' }}{{ b }}{{ '} {% c %} {#d#} x' }}"
    assert flan_to_jinja("{{Definition}}\n\n{{inputs}}{final_suffix}", pattern=True) == \
        "{{ Definition }}\n\n{{ inputs }}{{ final_suffix }}"
    for bad in ("{}", "{0}", "{true}"):
        with pytest.raises(FlanmixError, match="placeholder"):
            flan_to_jinja(bad + " text")


def test_render_batch_renders_a_tasks_few_shot_rows_from_its_own_rows(task, tmp_path):
    resolver = Resolver([tmp_path / "reg"])
    out = render_request({"templates": "fruit", "variant": "fs_opt", "template": 2, "seed": 5,
                          "fewshot_mode": "template_mix", "row": {"word": "kiwi", "label": 1}}, resolver)
    assert out.inputs.endswith("In: [kiwi]\n\nOut:") and out.targets == "yes"
    zs = render_request({"templates": "fruit", "variant": "zs_opt", "row": {"word": "kiwi", "label": 0}}, resolver)
    assert zs.inputs == "Is kiwi a fruit?  \nOPTIONS:\n- yes\n- no" and zs.targets == " no"


# ---------------------------------------------------------------------------------------------- mixtures

def test_inversion_tasks_are_mixed_at_a_ratio_of_their_parents_rate(tmp_path):
    reg = tmp_path / "reg"
    write_registry(reg, name="base", rows=30)
    write_registry(reg, name="base_inv", rows=90, extra="inversion_of: base\n")
    write_registry(reg, name="other", rows=30)
    registry = Registry.discover([reg], bundled=False, env=False, python=False)
    spec = {"seed": 0, "size": {"examples": 200}, "rate": {"by": "examples"}, "inversion_tasks": 0.3,
            "components": [{"tasks": "*"}]}
    manifest = build(spec, tmp_path / "out", registry=registry, fmt="jsonl", progress=False)
    rates = {leaf["task"]: leaf["rate"] for leaf in manifest["leaves"]}
    assert rates["base_inv"] == pytest.approx(0.3 * rates["base"]) and rates["base"] == pytest.approx(rates["other"])
    plain = build({**spec, "inversion_tasks": None}, tmp_path / "plain", registry=registry, fmt="jsonl",
                  progress=False)
    assert {leaf["task"]: leaf["rate"] for leaf in plain["leaves"]}["base_inv"] == pytest.approx(0.6)


def test_mixture_builds_per_variant_lists_with_a_token_budget_and_reports_templates(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    reg = tmp_path / "reg"
    write_registry(reg, extra="few_shot_max_tokens: 22\n")
    registry = Registry.discover([reg], bundled=False, env=False, python=False)
    spec = {"seed": 3, "size": {"examples": 400}, "randomize_options": True, "components": [{"task": "fruit"}],
            "tokenizer": str(tmp_path / "tokenizer.json")}
    manifest = build(spec, tmp_path / "out", registry=registry, fmt="jsonl", progress=False, num_proc=2,
                     rows_per_shard=100)
    rows = [json.loads(line) for f in sorted((tmp_path / "out").glob("*.jsonl")) for line in f.read_text().splitlines()]
    fs = [r for r in rows if r["template_type"].startswith("fs")]
    assert fs and max(r["template_idx"] for r in fs) == 2 and max(r["template_idx"] for r in rows) == 2
    lengths = [len(tokenizer.encode(r["inputs"], add_special_tokens=False).ids) for r in fs]
    assert max(lengths) <= 22 + 4  # the budget, plus pattern 1's input_pattern ("Task: fruit.")
    size = manifest["size"]  # rows left without exemplars are replaced by another example's row (or dropped)
    assert size["fewshot_replaced"] > 0
    assert size["rows"] + size.get("fewshot_dropped", 0) + size["dedup_dropped"] == 400
    report = manifest["templates"]["fruit"]
    assert report["planned"] == 400 and 0 < report["planned_inverted"] < 200  # zs rows only: fs has none
    assert report["sources"] == {"zero_shot": ["hand:zs[0]", None]}
    again = build(spec, tmp_path / "again", registry=registry, fmt="jsonl", progress=False, num_proc=1,
                  rows_per_shard=100)
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]

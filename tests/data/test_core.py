"""The data core: spec validation, sandboxed templates, registry discovery, Flan-style rendering, CLI errors."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flanmix.cli import main
from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.options import (
    OPTION_MARKERS,
    OPTIONS_STARTS,
    OptionsStyle,
    format_options,
    random_options_style,
    split_choices,
)
from flanmix.registry import Registry, load_task_file, register_task, unregister_task

TEMPLATES = textwrap.dedent("""\
    zero_shot:
      - {input: "Is {{ word }} a fruit?\\n\\n{{ options_ }}", target: "{{ answer }}"}
      - {input: "{{ word }}: fruit or not? {{ options_ }}", target: "{{ answer }}"}
      - {input: "Name something whose answer is {{ answer }}.", target: "{{ word }}", inverted: true}
    cot:
      - {input: "Is {{ word }} a fruit? Explain.", target: "{{ why }} So the answer is {{ answer }}."}
    few_shot:
      - {inputs_prefix: "Q: ", targets_prefix: "A: ", x_y_delimiter: "\\n", example_separator: "\\n\\n"}
    """)


def write_task(root: Path, name: str = "fruit", *, extra: str = "", templates: str = TEMPLATES,
               data_rows: list[dict] | None = None) -> Path:
    """A file-sourced task with options and CoT, in registry folder `root`."""
    root.mkdir(parents=True, exist_ok=True)
    rows = data_rows if data_rows is not None else [
        {"word": w, "label": int(w in {"apple", "pear", "plum", "fig"})}
        for w in ["apple", "stone", "pear", "chair", "plum", "cloud", "fig", "shoe"] * 3]
    with open(root / f"{name}.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / f"{name}.yaml").write_text(templates)
    spec = root / f"{name}.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: {name}
        description: Is the word a fruit?
        cluster: classification
        source: {{files: {name}.jsonl}}
        fields:
          answer: "{{{{ 'yes' if label else 'no' }}}}"
          options: "{{{{ ['yes', 'no'] }}}}"
          why: "{{{{ word }}}} is {{{{ '' if label else 'not ' }}}}a fruit."
        options_field: options
        rationale_field: why
        templates: {name}
        validation_fraction: 0.0
        """) + extra)
    return spec


@pytest.fixture()
def task(tmp_path):
    return load_task_file(write_task(tmp_path / "reg"), registry_root=tmp_path / "reg")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flanmix", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=Path(__file__).parent.parent)


# ------------------------------------------------------------------------------------------------- rendering

def test_all_variants_render_and_are_deterministic(task):
    example = task.examples()[0]
    for variant in TEMPLATE_TYPES:
        for cot in (False, True):
            first = task.render(example, template_type=variant, cot=cot, seed=3, randomize_options=True)
            again = task.render(example, template_type=variant, cot=cot, seed=3, randomize_options=True)
            assert first == again
            assert first["template_type"] == variant and first["cot"] is cot
            assert set(first) == {"inputs", "targets", "task_name", "task_source", "template_type",
                                  "template_idx", "example_id", "cot"}


def test_zero_shot_options_deterministic_form(task):
    apple = task.examples()[0]
    opt = task.render(apple, template_type="zs_opt", template_idx=0)
    noopt = task.render(apple, template_type="zs_noopt", template_idx=0)
    assert opt["inputs"] == "Is apple a fruit?\n\nOPTIONS:\n- yes\n- no"
    assert noopt["inputs"] == "Is apple a fruit?"
    assert opt["targets"] == noopt["targets"] == "yes"


def test_cot_target_has_rationale_then_answer(task):
    stone = task.examples()[1]
    row = task.render(stone, cot=True)
    assert row["targets"] == "stone is not a fruit. So the answer is no."


def test_inverted_templates_are_flagged(task):
    assert task.template_indices(inverted=True) == [2]
    assert task.template_indices(inverted=False) == [0, 1]
    row = task.render(task.examples()[0], template_idx=2)
    assert row["targets"] == "apple"


def test_letter_markers_rewrite_target_to_marker():
    style = OptionsStyle(start="Choices:", marker="({L}) {}", kind="letter", end="")
    block = format_options(["red", "green", "blue"], style)
    assert block.text == "Choices:\n(A) red\n(B) green\n(C) blue"
    assert block.labels == ("(A)", "(B)", "(C)")
    number = format_options(["x", "y"], OptionsStyle("OPTIONS:", "{N}. {}", "number", "\n"))
    assert number.text == "OPTIONS:\n1. x\n2. y\n" and number.labels == ("1.", "2.")


def test_randomized_options_rewrite_target_consistently(task):
    seen_kinds = set()
    for seed in range(60):
        for example in task.examples()[:4]:
            full = task.render_full(example, template_type="zs_opt", seed=seed, randomize_options=True)
            assert full.options == ["yes", "no"]
            truth = "yes" if example.raw["label"] else "no"
            if full.targets == truth:
                seen_kinds.add("bullet")
                assert truth in full.inputs
            else:
                seen_kinds.add("marker")
                # The target is the marker of the right option, and that marker appears before it in the input.
                line = next(ln for ln in full.inputs.splitlines() if ln.endswith(" " + truth))
                assert line.startswith(full.targets)
    assert seen_kinds == {"bullet", "marker"}


def test_random_style_covers_declared_forms():
    rng = random.Random(0)
    styles = {random_options_style(rng) for _ in range(2000)}
    assert {s.start for s in styles} == set(OPTIONS_STARTS)
    assert {s.marker for s in styles} == {m for m, _ in OPTION_MARKERS}


def test_few_shot_exemplars_never_equal_target_and_fit_budget(tmp_path):
    # Duplicated rows: the exemplar pool contains identical copies of the target, which must be skipped.
    rows = [{"word": "apple", "label": 1}] * 5 + [{"word": "stone", "label": 0}] * 5
    spec = write_task(tmp_path / "reg", data_rows=rows, extra="few_shot_k: 4\n")
    task = load_task_file(spec, registry_root=tmp_path / "reg")
    for example in task.examples():
        for seed in range(5):
            row = task.render(example, template_type="fs_noopt", template_idx=0, seed=seed)
            shots = row["inputs"].split("\n\n")
            assert shots[-1] == f"Q: Is {example.raw['word']} a fruit?\nA:"
            assert all(f"Q: Is {example.raw['word']} a fruit?" not in shot for shot in shots[:-1])
            assert 1 <= len(shots) - 1 <= 4
    spec = write_task(tmp_path / "small", data_rows=[{"word": f"w{i}", "label": i % 2} for i in range(20)],
                      extra="few_shot_max_chars: 60\n")
    small = load_task_file(spec, registry_root=tmp_path / "small")
    row = small.render(small.examples()[0], template_type="fs_noopt", template_idx=0)
    assert row["inputs"].count("Q: ") == 2  # one exemplar always kept, then the budget stops more


def test_render_is_independent_of_order(task):
    examples = task.examples()
    forward = [task.render(e, template_type="fs_opt", seed=1, randomize_options=True) for e in examples]
    backward = [task.render(e, template_type="fs_opt", seed=1, randomize_options=True) for e in reversed(examples)]
    assert forward == list(reversed(backward))
    other_seed = [task.render(e, template_type="fs_opt", seed=2, randomize_options=True) for e in examples]
    assert other_seed != forward


def test_validation_split_is_content_based(tmp_path):
    rows = [{"word": f"w{i % 40}", "label": i % 2} for i in range(400)]
    spec = write_task(tmp_path / "reg", data_rows=rows)
    text = spec.read_text().replace("validation_fraction: 0.0", "validation_fraction: 0.3")
    spec.write_text(text)
    task = load_task_file(spec, registry_root=tmp_path / "reg")
    train = {json.dumps(e.raw, sort_keys=True) for e in task.examples("train")}
    valid = {json.dumps(e.raw, sort_keys=True) for e in task.examples("validation")}
    assert train and valid and not train & valid


def test_choice_filter_is_seeded(tmp_path):
    templates = TEMPLATES.replace('"Is {{ word }} a fruit?\\n\\n{{ options_ }}"',
                                  "\"{{ ['Is', 'Would you say'] | choice }} {{ word }} a fruit?\"")
    task = load_task_file(write_task(tmp_path / "r", templates=templates), registry_root=tmp_path / "r")
    example = task.examples()[0]
    outputs = {task.render(example, seed=s)["inputs"] for s in range(20)}
    assert outputs == {"Is apple a fruit?", "Would you say apple a fruit?"}
    assert task.render(example, seed=5) == task.render(example, seed=5)


def test_split_choices_promptsource_style():
    assert split_choices("yes ||| no") == ["yes", "no"]
    assert split_choices(["a", 1]) == ["a", "1"]


# ------------------------------------------------------------------------------------------------- registry

def test_registry_discovery_env_and_flag(tmp_path, monkeypatch):
    write_task(tmp_path / "a", "task_a")
    write_task(tmp_path / "b", "task_b")
    monkeypatch.setenv("FLANMIX_REGISTRY", str(tmp_path / "a"))
    registry = Registry.discover([tmp_path / "b"])
    assert "task_a" in registry and "task_b" in registry and "arith_add" in registry
    assert [t.name for t in registry.select("task_*")] == ["task_a", "task_b"]
    assert {t.name for t in registry.select("cluster:classification")} >= {"task_a", "task_b"}


def test_python_registration(tmp_path):
    spec = {"name": "py_echo", "cluster": "strings", "source": {"builtin": "arithmetic.add", "examples": 10},
            "fields": {"answer": "{{ a }}"},
            "templates": {"zero_shot": [{"input": "Echo {{ a }}", "target": "{{ answer }}"}]}}
    try:
        task = register_task(spec)
        assert Registry.discover().get("py_echo") is task
        row = task.render(task.examples()[0])
        assert row["inputs"] == f"Echo {row['targets']}"
        with pytest.raises(FlanmixError, match="already registered"):
            register_task(spec)
    finally:
        unregister_task("py_echo")


def test_unknown_task_suggests_close_names():
    with pytest.raises(FlanmixError, match="did you mean arith_add"):
        Registry.discover().get("arith_ad")


# ------------------------------------------------------------------------------------------------- bad input

def expect_error(spec_path: Path, match: str, *, line: int | None = None, render: bool = False) -> FlanmixError:
    with pytest.raises(FlanmixError) as info:
        task = load_task_file(spec_path, registry_root=spec_path.parent)
        if render:
            task.render(task.examples()[0], template_type="zs_opt")
    err = info.value
    assert match in str(err), str(err)
    if line is not None:
        assert err.line == line, str(err)
    assert "\n" not in str(err)
    return err


def test_malformed_yaml(tmp_path):
    spec = write_task(tmp_path)
    spec.write_text("name: x\ncluster: [unclosed\n")
    err = expect_error(spec, "malformed YAML")
    assert err.file == str(spec) and err.line is not None


def test_unknown_key_names_file_line_field(tmp_path):
    spec = write_task(tmp_path, extra="metricz: [exact_match]\n")
    err = expect_error(spec, "unknown key", line=len(spec.read_text().splitlines()))
    assert err.field == "metricz"


def test_missing_field(tmp_path):
    spec = write_task(tmp_path)
    spec.write_text(spec.read_text().replace("cluster: classification\n", ""))
    err = expect_error(spec, "required field is missing")
    assert err.field == "cluster"


def test_jinja_syntax_error_points_at_template_line(tmp_path):
    templates = TEMPLATES.replace('target: "{{ word }}"', 'target: "{{ word }"')
    spec = write_task(tmp_path, templates=templates)
    err = expect_error(spec, "Jinja syntax error", line=4)
    assert err.field == "zero_shot[2].target" and err.file.endswith("templates/fruit.yaml")


def test_undefined_variable_at_render_time(tmp_path):
    templates = TEMPLATES.replace("Is {{ word }} a fruit?\\n", "Is {{ wrod }} a fruit?\\n")
    spec = write_task(tmp_path, templates=templates)
    err = expect_error(spec, "undefined variable", line=2, render=True)
    assert "wrod" in str(err) and err.field == "zero_shot[0].input"


@pytest.mark.parametrize("expression", ["{{ word.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
                                        "{{ ''.__class__.__base__.__subclasses__() }}"])
def test_sandbox_blocks_attribute_access(tmp_path, expression):
    templates = TEMPLATES.replace("Is {{ word }} a fruit?\\n", expression + "\\n")
    spec = write_task(tmp_path, templates=templates)
    err = expect_error(spec, "blocked by the template sandbox", render=True)
    assert "is unsafe" in str(err) and err.field == "zero_shot[0].input"


def test_sandbox_has_no_filesystem_access(tmp_path):
    templates = TEMPLATES.replace("Is {{ word }} a fruit?\\n", "{% include '/etc/passwd' %}\\n")
    spec = write_task(tmp_path, templates=templates)
    err = expect_error(spec, "template failed: TypeError: no loader for this environment", render=True)
    assert "root:" not in str(err)


def test_missing_and_empty_data_file(tmp_path):
    spec = write_task(tmp_path)
    (tmp_path / "fruit.jsonl").unlink()
    expect_error(spec, "no data file matches", render=True)
    (tmp_path / "fruit.jsonl").write_text("")
    err = expect_error(spec, "data file is empty", render=True)
    assert err.file.endswith("fruit.jsonl")


def test_duplicate_names_name_both_files(tmp_path):
    write_task(tmp_path / "a", "same")
    write_task(tmp_path / "b", "same")
    with pytest.raises(FlanmixError) as info:
        Registry.discover([tmp_path / "a", tmp_path / "b"], bundled=False)
    assert str(tmp_path / "a" / "same.yaml") in str(info.value)
    assert str(tmp_path / "b" / "same.yaml") in str(info.value)


def test_cot_templates_need_rationale_field(tmp_path):
    spec = write_task(tmp_path)
    spec.write_text(spec.read_text().replace("rationale_field: why\n", ""))
    expect_error(spec, "no rationale_field")


# ------------------------------------------------------------------------------------------------- CLI

def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    spec = write_task(tmp_path / "reg", extra="bogus: 1\n")
    result = run_cli("tasks", "list", "--registry", str(tmp_path / "reg"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert str(spec) in result.stderr and "bogus" in result.stderr
    debug = run_cli("--debug", "tasks", "list", "--registry", str(tmp_path / "reg"))
    assert "Traceback" in debug.stderr


def test_cli_validate_reports_every_problem(tmp_path):
    good = tmp_path / "reg"
    write_task(good, "good_task")
    write_task(good, "bad_one", extra="bogus: 1\n")
    write_task(good, "bad_two", templates=TEMPLATES.replace("{{ word }} a fruit?\\n", "{{ nope }} a fruit?\\n"))
    result = run_cli("tasks", "validate", str(good))
    assert result.returncode == 2
    assert "bad_one.yaml" in result.stderr and "bogus" in result.stderr
    assert "bad_two.yaml" in result.stderr or "bad_two" in result.stderr
    assert "nope" in result.stderr


def test_cli_render_and_list(tmp_path):
    write_task(tmp_path / "reg", "fruit")
    result = run_cli("render", "fruit", "--variant", "fs_opt", "-n", "2", "--registry", str(tmp_path / "reg"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("INPUT:") == 2 and "OPTIONS:" in result.stdout
    listing = run_cli("tasks", "list", env={"FLANMIX_REGISTRY": str(tmp_path / "reg")})
    assert "fruit" in listing.stdout and "arith_add" in listing.stdout


def test_every_command_has_help():
    for command in (["tasks", "list"], ["tasks", "show"], ["tasks", "validate"], ["render"]):
        with pytest.raises(SystemExit) as info:
            main([*command, "--help"])
        assert info.value.code == 0


def test_import_flanmix_does_not_import_torch():
    code = ("import sys, flanmix, flanmix.cli, flanmix.registry, flanmix.task; flanmix.cli.build_parser(); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_marker_rewrite_only_where_markers_are_shown(task):
    """Inverted and CoT templates that do not show the options block keep the answer text, whatever the style."""
    for seed in range(40):
        for example in task.examples()[:4]:
            truth = "yes" if example.raw["label"] else "no"
            inverted = task.render(example, template_type="zs_opt", template_idx=2, seed=seed, randomize_options=True)
            assert inverted["inputs"] == f"Name something whose answer is {truth}."
            cot = task.render_full(example, template_type="zs_opt", cot=True, seed=seed, randomize_options=True)
            assert cot.targets.endswith(f"So the answer is {truth}.") and cot.answer == truth


def test_choice_draws_match_between_input_and_target(tmp_path):
    """A random pick made in the input is the same pick when the target repeats it (one-pass semantics)."""
    pick = "{{ ['red', 'green', 'blue', 'cyan'] | choice }}"
    templates = TEMPLATES.replace('target: "{{ word }}", inverted: true',
                                  f'target: "{pick}"').replace("Name something whose answer is {{ answer }}.",
                                                               f"Say {pick}.")
    task = load_task_file(write_task(tmp_path / "r", templates=templates), registry_root=tmp_path / "r")
    picks = set()
    for seed in range(30):
        row = task.render(task.examples()[0], template_idx=2, seed=seed)
        assert row["inputs"] == f"Say {row['targets']}."
        picks.add(row["targets"])
    assert len(picks) > 1


def test_choice_in_field_mapping_is_per_example(tmp_path):
    spec = write_task(tmp_path / "r")
    spec.write_text(spec.read_text().replace("fields:\n", "fields:\n  tone: \"{{ ['a', 'b', 'c', 'd'] | choice }}\"\n"))
    task = load_task_file(spec, registry_root=tmp_path / "r")
    tones = [task.context(e)["tone"] for e in task.examples()]
    assert len(set(tones)) > 1
    again = load_task_file(spec, registry_root=tmp_path / "r")
    assert [again.context(e)["tone"] for e in again.examples()] == tones

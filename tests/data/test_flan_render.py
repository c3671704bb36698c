"""Golden tests: FLAN's own templates, imported with `flanmix import flan`, render exactly as FLAN renders them.

The references here are written from FLAN's rules (../shared/FLAN.md), independently of flanmix's renderer:
substitution is a regex split on `({\\w*})` with each `{name}` replaced by the value and everything else literal;
few-shot prompts follow FLAN's assembly formula; randomized option and dialog blocks are built from the tables read
out of FLAN's file. Rows carry Jinja-looking values, FLAN braces, quotes, newlines, trailing spaces and non-ASCII.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flan_reference import flan_fewshot, flan_format

from flanmix.batch import Resolver, render_batch, render_request
from flanmix.cli import main
from flanmix.core.errors import FlanmixError
from flanmix.fewshot import FewShotDropped
from flanmix.importers.flan import import_flan
from flanmix.importers.flan_source import flan_key_slug, read_flan_tables

VALUES = ("{{ x }} and {% raw %}", "{answer} {premise}", 'say "hi" \'there\'', "line one\nline two",
          "trailing space  ", "naïve café – 東京 😀", "{% for i in range(3) %}{{ i }}{% endfor %}", "plain")
OPTIONS = ["yes ", " no {x}", "{{ maybe }}"]  # stripped comparison: the answer "no {x}" matches option 1
ANSWER = "no {x}"
TURNS = ["Hi {name}!", "Hello {{ there }}  ", "How are you?\nFine."]
SENTINEL_OPTIONS, SENTINEL_ANSWER = "\x00OPTIONS\x00", "\x00ANSWER\x00"


def names_of(*templates: str) -> set[str]:
    return {n for t in templates for n in re.findall(r"{(\w*)}", t)}


def make_row(names: set[str], salt: int) -> dict:
    """A row with every field a template reads (blocks excluded: flanmix builds them from options/dialog)."""
    row = {name: VALUES[(salt + i) % len(VALUES)] for i, name in enumerate(sorted(names))}
    row.pop("options_", None)
    row.pop("dialog_", None)
    row.update(options=list(OPTIONS), answer=ANSWER, dialog=list(TURNS))
    return row


def reference_row(row: dict, *, options: bool) -> dict:
    """The features FLAN formats with: the deterministic options block (zs_opt/fs_opt) and dialog block."""
    return {**row, "options_": "OPTIONS:\n- " + "\n- ".join(row["options"]) if options else "",
            "dialog_": "DIALOG:\n" + "\n- ".join(row["dialog"]) + "\n- "}


@pytest.fixture(scope="session")
def tables(shared_data):
    return read_flan_tables(shared_data / "templates" / "flan")


@pytest.fixture(scope="session")
def registry(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flan") / "reg"
    import_flan(shared_data / "templates" / "flan", out)
    return out


@pytest.fixture(scope="session")
def resolver(registry) -> Resolver:
    return Resolver([registry])


def render(resolver: Resolver, key: str, variant: str, k: int, row: dict, **extra) -> tuple[str, str]:
    out = render_request({"templates": f"flan/{flan_key_slug(key)}", "variant": variant, "template": k,
                          "row": row, **extra}, resolver)
    return out.inputs, out.targets


# ------------------------------------------------------------------------------------------------- import

def test_import_writes_every_key_in_flan_order_with_provenance(tables, registry):
    files = sorted((registry / "templates" / "flan").glob("*.yaml"))
    assert len(files) == 121  # 120 keys + the NIv2 inline few-shot set
    assert {f.stem for f in files} == {flan_key_slug(k) for k in tables.patterns} | {"natinst_v2_inline_fs"}
    assert flan_key_slug("bigbench:strategyqa.gen.blueridge_vocab.0_shot.1000_examples") == \
        "bigbench_strategyqa_gen_blueridge_vocab_0_shot_1000_examples"
    resolver = Resolver([registry])
    counts = {"zs": 0, "noopt": 0, "fs": 0}
    for key in tables.patterns:
        prompts = resolver.resolve(f"flan/{flan_key_slug(key)}")
        zs, noopt = prompts.items("zs_opt"), prompts.items("zs_noopt")
        assert [t.spec.source for t in zs] == [f"flan:PATTERNS[{key}][{k}]" for k in range(len(zs))]
        assert [t.spec.source for t in noopt] == [f"flan:PATTERNS_NO_OPTIONS[{key}][{k}]" for k in range(len(noopt))]
        few = prompts.lists["few_shot_patterns"]
        assert len(few) == len(tables.fewshot_patterns.get(key, ()))
        assert all(t.spec.source == f"flan:FEWSHOT_PATTERNS[{key}][{k}]" for k, t in enumerate(few))
        assert prompts.templates.strip is False and prompts.templates.options_style == "flan"
        assert all(t.spec.inverted == key.endswith("_input_inversion") for t in zs)
        counts["zs"] += len(zs)
        counts["noopt"] += len(noopt)
        counts["fs"] += len(few)
    assert counts == {"zs": 1290, "noopt": 1290, "fs": 1190}  # with the aliased keys


def test_import_is_atomic_and_refuses_to_overwrite(shared_data, tmp_path, capsys):
    out = tmp_path / "reg"
    assert main(["import", "flan", str(shared_data / "templates" / "flan"), "--out", str(out)]) == 0
    assert "120 FLAN keys" in capsys.readouterr().out
    assert main(["import", "flan", str(shared_data / "templates" / "flan"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    assert not list(tmp_path.glob("reg.tmp-*"))


def test_hostile_flan_file_is_refused_in_one_line_and_nothing_is_written(shared_data, tmp_path, capsys):
    src = tmp_path / "flan"
    src.mkdir()
    (src / "flan_templates_branched.py").write_text(
        (shared_data / "templates" / "flan" / "flan_templates_branched.py").read_text())
    text = (shared_data / "templates" / "flan" / "templates.py").read_text()
    (src / "templates.py").write_text(text.replace("PATTERNS = {", "import os\nos.system('touch pwned')\n"
                                                                   "PATTERNS = {", 1))
    out = tmp_path / "out"
    assert main(["import", "flan", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "templates.py:" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "pwned").exists() and not Path("pwned").exists()


# ------------------------------------------------------------------------------------------------- zero-shot

def test_every_zero_shot_pattern_renders_as_flan_through_render_batch(tables, registry, tmp_path, capsys):
    """All 1,290 zs_opt (deterministic options) and 1,290 zs_noopt renders, byte for byte, via the CLI."""
    requests, expected = [], []
    for variant, table in (("zs_opt", tables.patterns), ("zs_noopt", tables.patterns_no_options)):
        for key, pairs in table.items():
            for k, (inputs, targets) in enumerate(pairs):
                row = make_row(names_of(inputs, targets), salt=k)
                ref = reference_row(row, options=variant == "zs_opt")
                requests.append({"templates": f"flan/{flan_key_slug(key)}", "variant": variant, "template": k,
                                 "row": row})
                expected.append({"inputs": flan_format(inputs, ref), "targets": flan_format(targets, ref)})
    batch = tmp_path / "requests.jsonl"
    batch.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests), encoding="utf-8")
    assert main(["render", "--batch", str(batch), "--registry", str(registry)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(expected) == 2 * 1290
    for request, line, want in zip(requests, lines, expected):
        assert json.loads(line) == want, request
    # The values really exercise the renderer: whitespace kept, Jinja and FLAN braces shown literally.
    joined = "".join(e["inputs"] for e in expected)
    assert "{% raw %}" in joined and "{answer}" in joined and "  \n" in joined


def test_render_batch_reports_bad_lines_in_place(registry, tmp_path):
    batch = tmp_path / "bad.jsonl"
    good = {"templates": "flan/rte", "variant": "zs_noopt", "template": 9, "row": {"premise": "P", "hypothesis": "H"}}
    batch.write_text("\n".join([json.dumps(good), "{not json", json.dumps({**good, "template": 99}),
                                json.dumps({**good, "row": {"premise": "P"}}), json.dumps({**good, "bogus": 1}),
                                json.dumps(good)]) + "\n")
    out = list(render_batch(batch, [registry]))
    assert [n for n, _ in out] == [1, 2, 3, 4, 5, 6]
    assert out[0][1] == out[5][1] == {"inputs": "Generate a context and a hypothesis.",
                                      "targets": "Context: P\n\nHypothesis: H"}
    for number, line in out[1:5]:
        assert set(line) == {"line", "error"} and line["error"].startswith(f"{batch}:{number}: ")
    assert "out of range" in out[2][1]["error"] and "hypothesis" in out[3][1]["error"]


# ------------------------------------------------------------------------------------------------- few-shot



@pytest.mark.parametrize("variant", ["fs_opt", "fs_noopt"])
def test_x_shot_assembly_equals_flans_formula(tables, resolver, variant):
    table = tables.fewshot_patterns if variant == "fs_opt" else tables.fewshot_patterns_no_options
    checked = 0
    for key, patterns in table.items():
        for k, pattern in enumerate(patterns):
            names = names_of(pattern.inputs, pattern.targets) | {"Definition"}
            row, shots = make_row(names, k), [make_row(names, k + 3), make_row(names, k + 5)]
            ref = [reference_row(r, options=variant == "fs_opt") for r in (row, *shots)]
            want = flan_fewshot(pattern, ref[0], [(pattern, r) for r in ref[1:]])
            got = render(resolver, key, variant, k, row, exemplars=shots, random_options=True)
            assert got == want, (key, variant, k)
            checked += 1
    assert checked == 1190


def test_template_mix_assembly_equals_flans_formula(tables, resolver):
    checked = 0
    for key, patterns in tables.fewshot_patterns.items():
        in_mix = [k for k, p in enumerate(patterns) if p.in_template_mix]
        for n, k in enumerate(in_mix):
            chosen = [in_mix[(n + j + 1) % len(in_mix)] for j in range(3)]
            separator = ("\n", "\n\n", "\n\n\n")[n % 3]
            names = names_of(*(patterns[i].inputs + patterns[i].targets for i in [k, *chosen])) | {"Definition"}
            row, shots = make_row(names, n), [make_row(names, n + j + 1) for j in range(3)]
            ref = [reference_row(r, options=True) for r in (row, *shots)]
            want = flan_fewshot(patterns[k], ref[0], [(patterns[i], r) for i, r in zip(chosen, ref[1:])], separator)
            got = render(resolver, key, "fs_opt", k, row, exemplars=shots, fewshot_mode="template_mix",
                         exemplar_templates=chosen, separator=separator)
            assert got == want, (key, k, chosen)
            checked += 1
    assert checked > 700


def test_x_shot_budget_keeps_the_longest_prefix_and_drops_rows_without_exemplars(tables, resolver):
    pattern = tables.fewshot_patterns["rte"][1]
    row = {"premise": "P", "hypothesis": "H", "options": ["yes", "no"], "answer": "no"}
    shots = [{**row, "premise": "x" * n} for n in (10, 20, 30)]
    ref = [reference_row({**r, "dialog": []}, options=True) for r in (row, *shots)]
    query = len(pattern.inputs_prefix + flan_format(pattern.inputs, ref[0]) + pattern.x_y_delimiter
                + pattern.targets_prefix)
    lengths = [len(pattern.inputs_prefix + flan_format(pattern.inputs, r) + pattern.x_y_delimiter
                   + pattern.targets_prefix + flan_format(pattern.targets, r) + pattern.example_separator)
               for r in ref[1:]]
    for keep in range(1, 4):
        budget = query + sum(lengths[:keep])
        got = render(resolver, "rte", "fs_opt", 1, row, exemplars=shots, budget=budget)
        assert got == flan_fewshot(pattern, ref[0], [(pattern, r) for r in ref[1:1 + keep]]), keep
    with pytest.raises(FewShotDropped, match="no exemplar"):
        render(resolver, "rte", "fs_opt", 1, row, exemplars=shots, budget=query + lengths[0] - 1)


# ------------------------------------------------------------------------------------------------- options

def option_blocks(tables, options: list[str]) -> dict[str, set[str]]:
    """Every randomized options block FLAN's tables can produce for `options` -> the answers it may come with."""
    blocks: dict[str, set[str]] = {}
    for start in tables.opt_start_strings:
        for names in set(tables.opt_item_names):
            for ends in set(tables.opt_item_end_strings):
                text = start + "".join(n + o + e for n, o, e in zip(names, options, ends))
                labels = [n.strip() for n in names[:len(options)]]
                match = [i for i, o in enumerate(options) if o.strip() == ANSWER.strip()]
                rewrite = len(set(labels)) == len(labels) and match
                blocks.setdefault(text, set()).add(labels[match[0]] if rewrite else ANSWER)
    return blocks


def _pattern(template: str, row: dict) -> re.Pattern:
    """A regex for FLAN's rendering of `template` with the options block and the answer left open."""
    text = flan_format(template, {**row, "options_": SENTINEL_OPTIONS, "answer": SENTINEL_ANSWER})
    out, seen = [], set()
    for part in re.split(f"({SENTINEL_OPTIONS}|{SENTINEL_ANSWER})", text):
        group = {SENTINEL_OPTIONS: "o", SENTINEL_ANSWER: "a"}.get(part)
        if group is None:
            out.append(re.escape(part))
        else:
            out.append(f"(?P={group})" if group in seen else f"(?P<{group}>.*?)")
            seen.add(group)
    return re.compile("".join(out), re.S)


def test_randomized_options_only_produce_flans_combinations_with_the_answer_rewrite(tables, resolver):
    blocks = option_blocks(tables, OPTIONS)
    seen_blocks, rewritten, inverted_rewrites, seed = set(), 0, 0, 0
    for key, pairs in tables.patterns.items():
        for k, (inputs, targets) in enumerate(pairs):
            used = names_of(inputs, targets)
            if "dialog_" in used or not used & {"options_", "answer"}:  # dialog blocks: tested below
                continue
            row = make_row(used, k)
            ref = reference_row(row, options=True)
            for _ in range(2):
                seed += 1
                got_in, got_tg = render(resolver, key, "zs_opt", k, row, random_options=True, seed=seed)
                m_in, m_tg = _pattern(inputs, ref).fullmatch(got_in), _pattern(targets, ref).fullmatch(got_tg)
                assert m_in and m_tg, (key, k, got_in, got_tg)
                found = {**m_tg.groupdict(), **m_in.groupdict()}
                for m in (m_in, m_tg):
                    assert all(found[g] == v for g, v in m.groupdict().items()), (key, k)
                block, answer = found.get("o"), found.get("a")
                if block is not None:
                    assert block in blocks, (key, k, block)
                    seen_blocks.add(block)
                    assert answer is None or answer in blocks[block], (key, k, block, answer)
                if answer is not None and answer != ANSWER:
                    rewritten += 1
                    inverted_rewrites += "options_" not in inputs  # FLAN rewrites the row, not the template
    assert len(seen_blocks) > 500 and rewritten > 100 and inverted_rewrites > 0


def test_options_tables_are_flans_and_fs_opt_stays_deterministic(tables, resolver):
    from flanmix import options

    assert options.FLAN_OPTION_STARTS == tables.opt_start_strings
    assert options.FLAN_OPTION_NAMES == tables.opt_item_names
    assert options.FLAN_OPTION_ENDS == tables.opt_item_end_strings
    assert options.FLAN_DIALOG_STARTS == tables.dialog_start_strings
    assert [[n[i % 2] for i in range(1000)] for n in options.FLAN_DIALOG_NAMES] == \
        [list(n) for n in tables.dialog_item_names]
    assert tuple((e,) * 1000 for e in options.FLAN_DIALOG_ENDS) == tables.dialog_item_end_strings
    row = {"premise": "P", "hypothesis": "H", "options": ["yes", "no"], "answer": "no"}
    for seed in range(20):  # fs_opt rows use the deterministic block even with random_options
        got = render(resolver, "rte", "fs_opt", 1, row, exemplars=[row], random_options=True, seed=seed)
        assert got[0].count("OPTIONS:\n- yes\n- no") == 2 and got[1] == "no"
    many = {**row, "options": [f"o{i}" for i in range(27)], "answer": "o3"}  # beyond FLAN's 26 labels
    got = render(resolver, "rte", "zs_opt", 0, many, random_options=True, seed=1)
    assert got[0].endswith("OPTIONS:\n- " + "\n- ".join(many["options"])) and got[1] == "o3"


def test_randomized_dialog_blocks_come_from_flans_tables(tables, resolver):
    candidates = set()
    for start in tables.dialog_start_strings:
        for names in tables.dialog_item_names:
            for ends in tables.dialog_item_end_strings:
                candidates.add(start + "".join(n + t + e for n, t, e in zip(names, TURNS, ends)) + names[len(TURNS)])
    inputs, _ = tables.patterns["wiki_dialog"][0]
    row = make_row(names_of(inputs), 0)
    regex = re.compile("(.*)".join(map(re.escape, flan_format(inputs, {**row, "dialog_": "\x00"}).split("\x00"))),
                       re.S)
    seen = set()
    for seed in range(300):
        got, _ = render(resolver, "wiki_dialog", "zs_opt", 0, row, random_options=True, seed=seed)
        block = regex.fullmatch(got).group(1)
        assert block in candidates, block
        seen.add(block)
    assert len(seen) > 200


def test_a_task_renders_imported_flan_templates_with_provenance(registry, tmp_path):
    """A task spec pointing at `flan/rte` renders FLAN's wording in every variant; sources name key and index."""
    from flanmix.registry import Registry

    reg = tmp_path / "tasks"
    reg.mkdir()
    rows = [{"premise": f"premise {i}  ", "hypothesis": f"h{i}", "label": i % 2} for i in range(30)]
    (reg / "rte.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (reg / "rte.yaml").write_text(
        "name: flan_rte\ncluster: nli\nsource: {files: rte.jsonl}\ntemplates: flan/rte\noptions_field: options\n"
        "fields:\n  options: \"{{ ['yes', 'no'] }}\"\n  answer: \"{{ ['yes', 'no'][label] }}\"\n"
        "validation_fraction: 0.0\n")
    task = Registry.discover([reg, registry], bundled=False, env=False, python=False).get("flan_rte")
    assert task.provenance()["zero_shot"][3] == "flan:PATTERNS[rte][3]"
    example = task.examples()[0]
    zs = task.render_full(example, template_type="zs_opt", template_idx=3)
    assert zs.inputs == ("premise 0  \nDoes this next sentence follow, given the preceding text?\nh0\n\n"
                         "OPTIONS:\n- yes\n- no") and zs.targets == "yes"
    rendered = set()
    for seed in range(40):
        try:
            rendered.add(task.render_full(example, template_type="fs_opt", template_idx=1, seed=seed).inputs)
        except FewShotDropped:  # FLAN drops rows without exemplars
            pass
    assert len(rendered) > 5 and all(r.endswith("Q: premise 0  \nh0\nOPTIONS:\n- yes\n- no\n\nA:") for r in rendered)
    with pytest.raises(FlanmixError, match="out of range"):
        task.render_full(example, template_type="zs_opt", template_idx=10)

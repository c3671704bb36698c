"""Reading FLAN's template files as data: counts, an independent cross-check, FLAN's derivation semantics
(aliases, in-place mutation, deepcopy), provenance, and hostile files refused with nothing executed."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

from flanmix.core.errors import FlanmixError
from flanmix.importers import flan_eval, flan_source
from flanmix.importers.flan_source import FEWSHOT_FIELDS, FewShotPatternData, flan_key_slug, read_flan_tables

ZS_REPLACES = ("\n\n{options_}", "\n{options_}", "{options_}", "\n\n{options_str}")
FS_REPLACES = ("\n\n{options_}", "\n{options_}", " | {options_}", " {options_}", " ({options_})", "{options_}",
               "\n\n{options_str}", "\n{options_str}")


def _strip(text: str, replaces: tuple[str, ...]) -> str:
    for old in replaces:
        text = text.replace(old, "")
    return text


@pytest.fixture(scope="session")
def flan_dir(shared_data) -> Path:
    return shared_data / "templates" / "flan"


@pytest.fixture(scope="session")
def tables(flan_dir):
    return read_flan_tables(flan_dir)


def _roots(tables, table: str) -> list[str]:
    """Keys that own their list (not aliases of an earlier key)."""
    return [k for k, src in tables.sources[table].items() if src.alias_of is None]


# ------------------------------------------------------------------------------------------------ counts

def test_zero_shot_counts(tables):
    patterns = tables.patterns
    assert len(patterns) == 120
    roots = _roots(tables, "patterns")
    assert len(roots) == 97 and len(set(patterns.values())) == 97  # 97 lists, by identity and by content
    entries = [pair for key in roots for pair in patterns[key]]
    # FLAN.md's "988 distinct (input, target) pairs" counts the entries of the 97 distinct lists; 23 of them
    # repeat a pair of another list, so there are 965 distinct pairs.
    assert len(entries) == 988 and len(set(entries)) == 965
    # "81 of 988 inputs end in whitespace, 11 targets padded" count the same 988 entries (79 / 11 distinct pairs).
    assert sum(i != i.rstrip() for i, _ in entries) == 81
    assert sum(t != t.strip() for _, t in entries) == 11
    assert sum(i != i.rstrip() for i, _ in set(entries)) == 79
    assert sum(len(v) for v in patterns.values()) == 1290  # with aliases


def test_branched_and_no_options_counts(tables):
    branched, v2 = tables.branched_patterns, tables.patterns
    assert len(branched) == 61 and sum(len(v) for v in branched.values()) == 610
    assert all(len(branched[k]) == len(v2[k]) for k in branched)
    # "v2 and the branched wording differ in 314 of 610": the pair at the same index differs (313 in the input).
    assert sum(b != v for k in branched for b, v in zip(branched[k], v2[k], strict=True)) == 314
    assert sum(b[0] != v[0] for k in branched for b, v in zip(branched[k], v2[k], strict=True)) == 313
    # Importing templates.py rewrites 284 of the 610 branched inputs in place (the 4-step replace changes them).
    assert sum(_strip(i, ZS_REPLACES) != i for v in branched.values() for i, _ in v) == 284
    no_options = tables.patterns_no_options
    assert list(no_options) == list(v2)  # update() of existing keys keeps PATTERNS' order
    for key, pairs in no_options.items():
        base = branched.get(key, v2[key])
        assert pairs == tuple((_strip(i, ZS_REPLACES), t) for i, t in base), key
    assert not any("{options_}" in i for v in no_options.values() for i, _ in v)


def test_fewshot_counts(tables):
    fewshot = tables.fewshot_patterns
    assert len(fewshot) == 119 and set(tables.patterns) - set(fewshot) == {"cot_stream_general_input_inversion"}
    roots = _roots(tables, "fewshot_patterns")
    assert len(roots) == 106 and len(set(fewshot.values())) == 106
    patterns = [p for key in roots for p in fewshot[key]]
    assert len(patterns) == 1060 and {len(fewshot[k]) for k in roots} == {10}
    assert sum(p.targets_prefix.endswith("\n") for p in patterns) == 93
    assert sum(not p.in_template_mix for p in patterns) == 345
    assert sum(p.input_pattern != "{{inputs}}{final_suffix}" for p in patterns) == 10
    # natinst's 10 patterns: 7 use "{{Definition}}\n\n{{inputs}}{final_suffix}", 3 their own wording of it.
    natinst = Counter(p.input_pattern for p in fewshot["natinst_v2"])
    assert natinst["{{Definition}}\n\n{{inputs}}{final_suffix}"] == 7 and len(natinst) == 4
    assert all(p.endswith("{{inputs}}{final_suffix}") and "{{Definition}}" in p for p in natinst)
    assert tables.fewshot_defaults == {
        "inputs_prefix": "", "targets_prefix": "", "x_y_delimiter": "\n\n", "example_separator": "\n\n\n",
        "final_suffix": "", "input_pattern": "{{inputs}}{final_suffix}", "in_template_mix": True}
    no_options = tables.fewshot_patterns_no_options
    assert list(no_options) == list(fewshot)
    for key, items in no_options.items():
        for got, orig in zip(items, fewshot[key], strict=True):
            assert got == FewShotPatternData(**{**orig.__dict__, "inputs": _strip(orig.inputs, FS_REPLACES)})


def test_option_and_dialog_tables(tables):
    assert len(tables.inline_fs_patterns) == 1 and len(tables.inline_fs_patterns["natinst_v2"]) == 10
    assert len(tables.opt_start_strings) == 16 and tables.opt_start_strings[0] == ""
    assert len(tables.opt_item_names) == 87 and {len(n) for n in tables.opt_item_names} == {26}
    assert len(set(tables.opt_item_names)) == 63
    assert tables.opt_item_names[0] == ("\n - ",) * 26
    assert tables.opt_item_names[23][:3] == (" i. ", " ii. ", " iii. ")
    assert tables.opt_item_names[39][-1] == "\n[z]. " and tables.opt_item_names[41][25] == "\n[26]. "
    assert tables.opt_item_end_strings == (("",) * 26, (";",) * 26, (".",) * 26)
    # 13, not 14: FLAN's list misses a comma, so "CONVERSATION:" "Conversation:" is one string.
    assert len(tables.dialog_start_strings) == 13 and "CONVERSATION:Conversation:" in tables.dialog_start_strings
    assert len(tables.dialog_item_names) == 50 and {len(n) for n in tables.dialog_item_names} == {1000}
    assert tables.dialog_item_names[23][:3] == ("\n  A. ", "\n  B. ", "\n  A. ")
    assert len(tables.dialog_item_end_strings) == 3 and {len(n) for n in tables.dialog_item_end_strings} == {1000}


def test_flan2021_file(tables):
    assert tables.flan2021_patterns is not None and set(tables.flan2021_patterns) == set(tables.branched_patterns)
    assert sum(len(v) for v in tables.flan2021_patterns.values()) == 610


# ------------------------------------------------------------------------------------------------ independent reading

def _literal_table(path: Path, name: str) -> dict:
    """PATTERNS-like table by `ast.literal_eval` of its dict literal, then its `T[a] = T[b]` aliases in order."""
    table: dict = {}
    for stmt in ast.parse(path.read_text(encoding="utf-8")).body:
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
            continue
        target = stmt.targets[0]
        if isinstance(target, ast.Name) and target.id == name and isinstance(stmt.value, ast.Dict):
            for key, value in zip(stmt.value.keys, stmt.value.values, strict=True):
                table[ast.literal_eval(key)] = value
        elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id == name
              and isinstance(stmt.value, ast.Subscript)):
            table[ast.literal_eval(target.slice)] = table[ast.literal_eval(stmt.value.slice)]
    return table


def test_cross_check_against_literal_eval(tables, flan_dir):
    v2 = _literal_table(flan_dir / "templates.py", "PATTERNS")
    assert list(v2) == list(tables.patterns)
    assert {k: tuple(ast.literal_eval(v)) for k, v in v2.items()} == tables.patterns
    branched = _literal_table(flan_dir / "flan_templates_branched.py", "PATTERNS")
    assert {k: tuple(ast.literal_eval(v)) for k, v in branched.items()} == tables.branched_patterns
    flan2021 = _literal_table(flan_dir / "flan2021_templates.py", "PATTERNS")
    assert {k: tuple(ast.literal_eval(v)) for k, v in flan2021.items()} == tables.flan2021_patterns
    inline = _literal_table(flan_dir / "templates.py", "INLINE_FS_PATTERNS")
    assert {k: tuple(ast.literal_eval(v)) for k, v in inline.items()} == tables.inline_fs_patterns
    fewshot = _literal_table(flan_dir / "templates.py", "FEWSHOT_PATTERNS")
    assert list(fewshot) == list(tables.fewshot_patterns)
    for key in ("rte", "natinst_v2", "wiki_dialog", "cot_gsm8k", "bigbench:strategyqa.gen.blueridge_vocab.0_shot"
                                                                  ".1000_examples"):
        calls = fewshot[key].elts
        expected = tuple(FewShotPatternData(**{**tables.fewshot_defaults,
                                               **{kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}})
                         for call in calls)
        assert expected == tables.fewshot_patterns[key], key


def test_aliases_and_provenance(tables, flan_dir):
    assert tables.aliases("patterns", "wiki_dialog") == ["predict_next_turn_dialog", "wiki_dialog", "task_master",
                                                         "qrecc"]
    assert tables.sources["patterns"]["wiki_dialog"].alias_of == "predict_next_turn_dialog"
    alias_statements = sum(len(tables.patterns) - len(_roots(tables, t)) for t in ("patterns",)) + (
        len(tables.fewshot_patterns) - len(_roots(tables, "fewshot_patterns")))
    assert alias_statements == 36  # FLAN.md: 36 alias assignments (23 zero-shot, 13 few-shot)
    rte = tables.sources["patterns"]["rte"]
    assert Path(rte.file) == flan_dir / "templates.py" and rte.line == 25 and rte.item_lines[:2] == (26, 28)
    assert len(rte.item_lines) == 10
    rte_no = tables.sources["patterns_no_options"]["rte"]
    assert Path(rte_no.file) == flan_dir / "flan_templates_branched.py" and rte_no.line == 20
    synth = tables.sources["patterns_no_options"]["synth_cot_drop"]  # deep-copied from v2, provenance follows
    assert Path(synth.file) == flan_dir / "templates.py" and synth == tables.sources["patterns"]["synth_cot_drop"]
    fs_source = tables.sources["fewshot_patterns_no_options"]["wiki_dialog"]
    assert fs_source.alias_of == "predict_next_turn_dialog"  # deepcopy keeps the aliasing
    lines = (flan_dir / "templates.py").read_text(encoding="utf-8").splitlines()
    for key, src in list(tables.sources["fewshot_patterns"].items())[:20]:
        assert lines[src.item_lines[0] - 1].strip().startswith("FewShotPattern("), key


def test_key_slugs(tables):
    assert flan_key_slug("bigbench:strategyqa.gen.blueridge_vocab.0_shot.1000_examples") == \
        "bigbench_strategyqa_gen_blueridge_vocab_0_shot_1000_examples"
    assert flan_key_slug("RTE-2 x") == "rte_2_x"
    slugs = {flan_key_slug(k) for k in tables.patterns}
    assert len(slugs) == 120  # no two keys collide


def test_reads_files_list_and_fields(flan_dir, tables):
    again = read_flan_tables([flan_dir / "templates.py", flan_dir / "flan_templates_branched.py"])
    assert again.patterns == tables.patterns and again.flan2021_patterns is None
    assert set(again.files) == {"templates", "branched"}
    assert FEWSHOT_FIELDS == ("inputs", "targets", "inputs_prefix", "targets_prefix", "x_y_delimiter",
                              "example_separator", "final_suffix", "input_pattern", "in_template_mix")
    with pytest.raises(FlanmixError, match="whose file was not given"):
        read_flan_tables([flan_dir / "templates.py"])
    with pytest.raises(FlanmixError, match="not a FLAN template file name"):
        read_flan_tables([flan_dir / "flan_collection_info.csv"])


# ------------------------------------------------------------------------------------------------ semantics

_BRANCHED = '''\
"""Old wording."""
PATTERNS = {
    "a": [("A old\\n\\n{options_}", "{answer}"), ("A2 {options_}", "{answer}")],
}
'''

_TEMPLATES = '''\
"""A small file in FLAN's layout."""
import copy
import dataclasses

from flan.v2 import flan_templates_branched as old

PATTERNS = {
    "a": [("A new\\n{options_}", "{answer}"), ("A2 new", "{answer}")],
    "c": [("C\\n\\n{options_}", "{answer} ")],
}
PATTERNS["b"] = PATTERNS["a"]
PATTERNS["d"] = PATTERNS["c"]

NOOPT = copy.deepcopy(PATTERNS)
NOOPT.update(old.PATTERNS)
for name, items in NOOPT.items():
  for i, (x, y) in enumerate(items):
    NOOPT[name][i] = (x.replace("\\n\\n{options_}", "").replace("\\n{options_}", "").replace(
        "{options_}", "") + "!", y)


@dataclasses.dataclass
class FewShotPattern:
  """Doc."""
  inputs: str
  targets: str
  inputs_prefix: str = ""
  targets_prefix: str = "A:\\n"
  x_y_delimiter: str = "\\n\\n"
  example_separator: str = "\\n\\n\\n"
  final_suffix: str = ""
  input_pattern: str = "{{inputs}}{final_suffix}"
  in_template_mix: bool = True

  @property
  def combined(self):
    return self.inputs_prefix + self.inputs


FEWSHOT_PATTERNS = {"a": [FewShotPattern(inputs="Q {options_}", targets="{answer}", in_template_mix=False)]}
FEWSHOT_PATTERNS["b"] = FEWSHOT_PATTERNS["a"]
FEWSHOT_PATTERNS_NO_OPTIONS = copy.deepcopy(FEWSHOT_PATTERNS)
for name, items in FEWSHOT_PATTERNS_NO_OPTIONS.items():
  for i, pattern in enumerate(items):
    pattern.inputs = pattern.inputs + "?"
    FEWSHOT_PATTERNS_NO_OPTIONS[name][i] = pattern
PATTERNS_NO_OPTIONS = NOOPT
INLINE_FS_PATTERNS = {"n": [("{Definition}", "{output}")]}
NUMS = ["I", "II"]
OPT_START_STRING_CANDIDATES = ["", "OPTIONS:"]
OPT_ITEM_NAME_CANDIDATES = [["\\n- " for _ in range(2)], [" (" + x.lower() + ") " for x in NUMS],
                            ["\\n" + chr(x) + ". " for x in range(ord("a"), ord("b") + 1)],
                            [str(x) + ")" for x in range(1, 3)]]
OPT_ITEM_END_STR_CANDIDATES = [["" for _ in range(2)]]
DIALOG_START_STRING_CANDIDATES = ["" "DIALOG:"]
DIALOG_ITEM_NAME_CANDIDATES = [["A " if x % 2 == 0 else "B " for x in range(3)]]
DIALOG_ITEM_END_STR_CANDIDATES = [[";" for _ in range(3)]]
'''


def _write(folder: Path, templates: str, branched: str = _BRANCHED) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "templates.py").write_text(templates, encoding="utf-8")
    (folder / "flan_templates_branched.py").write_text(branched, encoding="utf-8")
    return folder


def test_derivation_semantics_match_python(tmp_path):
    """Aliases share lists, update() breaks an alias, a shared list is rewritten once per alias (so twice), the
    imported module's lists are rewritten in place, and deepcopy keeps the few-shot aliasing."""
    t = read_flan_tables(_write(tmp_path / "flan", _TEMPLATES))
    assert t.patterns["b"] == t.patterns["a"] and t.sources["patterns"]["b"].alias_of == "a"
    # "a" now holds the old wording, "b" keeps the deep copy of the new one; "c"/"d" share one list, so each
    # of their items got the rewrite (and its "!") twice, exactly as Python runs FLAN's loop.
    assert t.patterns_no_options == {"a": (("A old!", "{answer}"), ("A2 !", "{answer}")),
                                     "c": (("C!!", "{answer} "),), "d": (("C!!", "{answer} "),),
                                     "b": (("A new!", "{answer}"), ("A2 new!", "{answer}"))}
    assert t.sources["patterns_no_options"]["b"].alias_of is None
    assert t.sources["patterns_no_options"]["d"].alias_of == "c"
    assert t.branched_patterns == {"a": (("A old\n\n{options_}", "{answer}"), ("A2 {options_}", "{answer}"))}
    assert t.fewshot_patterns["a"][0] == FewShotPatternData(
        inputs="Q {options_}", targets="{answer}", inputs_prefix="", targets_prefix="A:\n", x_y_delimiter="\n\n",
        example_separator="\n\n\n", final_suffix="", input_pattern="{{inputs}}{final_suffix}", in_template_mix=False)
    assert t.fewshot_patterns_no_options["a"][0].inputs == "Q {options_}??"  # one object, mutated via both keys
    assert t.fewshot_patterns["a"][0].inputs == "Q {options_}"  # the deep copy left the original alone
    assert t.opt_item_names == (("\n- ", "\n- "), (" (i) ", " (ii) "), ("\na. ", "\nb. "), ("1)", "2)"))
    assert t.dialog_start_strings == ("DIALOG:",) and t.dialog_item_names == (("A ", "B ", "A "),)


def test_bad_table_shapes(tmp_path):
    bad = _TEMPLATES.replace('INLINE_FS_PATTERNS = {"n": [("{Definition}", "{output}")]}',
                             'INLINE_FS_PATTERNS = {"n": [("{Definition}", "{output}"),\n  ("one",)]}')
    line = bad.splitlines().index('  ("one",)]}') + 1
    folder = _write(tmp_path / "flan", bad)
    with pytest.raises(FlanmixError) as err:
        read_flan_tables(folder)
    assert str(err.value).startswith(f"{folder / 'templates.py'}:{line}: INLINE_FS_PATTERNS['n'][1] is not an (input,")
    with pytest.raises(FlanmixError, match="OPT_START_STRING_CANDIDATES is missing"):
        read_flan_tables(_write(tmp_path / "f2", _TEMPLATES.replace("OPT_START_STRING_CANDIDATES =", "X =")))
    with pytest.raises(FlanmixError, match="FewShotPattern has fields"):
        read_flan_tables(_write(tmp_path / "f3", _TEMPLATES.replace('  final_suffix: str = ""\n', "")))


# ------------------------------------------------------------------------------------------------ hostile files

HOSTILE = [
    # (source, construct named in the error, line)
    ("__import__('os').system('touch {s}')", "call of __import__()", 1),
    ("x = 1\nopen('{s}', 'w').write('x')", "call of open()", 2),
    ("x = open('{s}', 'w')", "call of open()", 1),
    ("import os\nos.system('touch {s}')", "import of 'os'", 1),
    ("from os import system", "import of 'os.system'", 1),
    ("from flan.v2 import templates", "import of 'flan.v2.templates'", 1),
    ("x = ().__class__.__bases__[0].__subclasses__()", "attribute '__subclasses__'", 1),
    ("x = (1).real", "attribute 'real' of int", 1),
    ("x = 'a'.format(open('{s}', 'w'))", "call of .format()", 1),
    ("x = eval(\"open('{s}', 'w')\")", "call of eval()", 1),
    ("x = exec", "name 'exec'", 1),
    ("x = getattr(1, 'real')", "call of getattr()", 1),
    ("x = (lambda: open('{s}', 'w'))()", "call of Lambda", 1),
    ("x = f\"{{open('{s}', 'w')}}\"", "JoinedStr", 1),
    ("def f():\n    open('{s}', 'w')\nf()", "FunctionDef statement", 1),
    ("while True:\n    pass", "While statement", 1),
    ("with open('{s}', 'w') as f:\n    pass", "With statement", 1),
    ("try:\n    pass\nexcept Exception:\n    pass", "Try statement", 1),
    ("x = [1]\ndel x[0]", "Delete statement", 2),
    ("x = 1\nx += 1", "AugAssign statement", 2),
    ("x = (y := 1)", "NamedExpr", 1),
    ("x = range(10**9)", "operator Pow", 1),
    ("x = 'a' * 1000000000", "operator Mult", 1),
    ("x = range(1000000000)", "over the 10,000 limit", 1),
    ("x = [c for c in 'abc']", "iterating over str", 1),
    ("x = [c for c in range(3) if c]", "comprehension with conditions", 1),
    ("x = {{1, 2}}", "Set", 1),
    ("x = [1, 2][0:1]", "slicing", 1),
    ("x = b'bytes'", "bytes constant", 1),
    ("class C:\n    pass", "a class other than a plain @dataclasses.dataclass", 1),
    ("import dataclasses\n@dataclasses.dataclass\nclass C:\n    x: str = open('{s}', 'w')", "call of open()", 4),
    ("import dataclasses\n@dataclasses.dataclass\nclass C:\n    def __init__(self):\n        pass",
     "FunctionDef in a dataclass body", 4),
    ("import dataclasses\n@dataclasses.dataclass(frozen=True)\nclass C:\n    x: str",
     "keyword arguments to dataclasses.dataclass()", 2),
    ("import copy\nx = copy.copy([1])", "call of .copy()", 2),
    ("s = 'ab'\nfor _ in range(40):\n    s = s + s", "over the 1,048,576 limit", 3),
    ("s = 'aaaa'\nfor _ in range(20):\n    s = s.replace('', 'xxxxxxxx')", "over the 1,048,576 limit", 3),
    ("x = [[0 for a in range(10000)] for b in range(10000)]", "evaluation steps", 1),
    ("x = {{}}\nfor k in range(3000):\n    for j in range(3000):\n        x = k", "evaluation steps", 4),
    ("x = " + "[" * 150 + "]" * 150, "nesting deeper than 100 levels", 1),
    ("x = " + "[" * 1000 + "]" * 1000, "Python syntax error", 1),
    ("x = 'a'" + " + 'a'" * 5000, "nesting too deep", 1),  # Python's own parser gives up (RecursionError)
    ("d = {{'a': 1}}\nfor k, v in d.items():\n    d.update({{k + 'x': 1}})", "RuntimeError", 2),
    ("x = 1 % 0", "ZeroDivisionError", 1),
    ("x = undefined_name", "name 'undefined_name'", 1),
]


@pytest.mark.parametrize("source,construct,line", HOSTILE, ids=[f"h{i}" for i in range(len(HOSTILE))])
def test_hostile_file_refused_and_nothing_runs(tmp_path, monkeypatch, source, construct, line):
    monkeypatch.setattr(flan_eval, "MAX_STEPS", 200_000)  # quick to reach; the real files' need is tested below
    sentinel = tmp_path / "SENTINEL"
    folder = _write(tmp_path / "flan", source.format(s=sentinel) + "\n")
    with pytest.raises(FlanmixError) as err:
        read_flan_tables(folder)
    message = str(err.value)
    assert message.startswith(f"{folder / 'templates.py'}:{line}: "), message
    assert construct in message and "\n" not in message, message
    assert not sentinel.exists()


def test_hostile_branched_file_and_budget_is_shared(tmp_path, monkeypatch):
    folder = _write(tmp_path / "flan", _TEMPLATES, branched="PATTERNS = {'a': [(open('x'), '')]}\n")
    with pytest.raises(FlanmixError, match=r"flan_templates_branched\.py:1: call of open\(\)"):
        read_flan_tables(folder)
    folder = _write(tmp_path / "f2", _TEMPLATES)
    first, second = flan_eval.Budget(), flan_eval.Budget()
    branched = flan_source.evaluate_file(folder / "flan_templates_branched.py", first)
    flan_source.evaluate_file(folder / "templates.py", second,
                            {"flan.v2.flan_templates_branched": flan_eval.Module("b", branched)})
    cap = max(first.steps, second.steps) + min(first.steps, second.steps) // 2
    assert first.steps <= cap and second.steps <= cap < first.steps + second.steps
    monkeypatch.setattr(flan_eval, "MAX_STEPS", cap)  # each file fits alone; one read shares one budget
    with pytest.raises(FlanmixError, match="evaluation steps"):
        read_flan_tables(folder)


def test_oversized_file_refused_before_parsing(tmp_path, monkeypatch):
    # ~1.2 MB of tiny statements would take ~700 MB of AST: refused by the token count, before ast.parse.
    folder = _write(tmp_path / "many", "x = 1\n" * 300_000)
    with pytest.raises(FlanmixError, match=r"templates\.py: about 900,000 tokens, over the 250,000 limit"):
        read_flan_tables(folder)
    monkeypatch.setattr(flan_source, "MAX_FILE_BYTES", 100)
    with pytest.raises(FlanmixError, match="over the 100 limit"):
        read_flan_tables(_write(tmp_path / "flan", _TEMPLATES))


def test_real_files_need_few_steps(flan_dir):
    """The real files stay well inside the budget that stops hostile ones (so the caps are not too tight)."""
    budget = flan_eval.Budget()
    branched = flan_source.evaluate_file(flan_dir / "flan_templates_branched.py", budget)
    flan_source.evaluate_file(flan_dir / "templates.py", budget,
                            {"flan.v2.flan_templates_branched": flan_eval.Module("b", branched)})
    assert budget.steps < flan_eval.MAX_STEPS / 4 and budget.chars < flan_eval.MAX_CHARS / 16
    assert Counter(type(v).__name__ for v in branched.values()) == Counter({"dict": 1})

"""Golden tests for the other Flan 2022 submixes: T0-SF, NIv2, CoT and Dialog (task_registry/flan/{t0,niv2,cot,dialog}).

Rows: the real samples in ../shared/data where there are some (FLAN's own CoT TSVs, Super-NaturalInstructions task
files, the t0_rendered prompts standing in for P3 rows), the fixture mirror (tests/fixtures/hub) for the rest, and
a few hand-made rows for the edge cases. Every row renders through the catalog spec + the shipped FLAN templates and
is compared with a reference written here, independently of the specs' Jinja: FLAN's preprocessing as plain Python
(flan/v2/preprocessors.py `t0`, `simple_cot_tsv`, `wiki_dialog`, `qrecc`, `filter_qrecc`, `format_options`,
`format_dialog`; task_configs.py `filter_mmlu_fn`, `lookup_posex_fn`), then FLAN's substitution (a regex split on
`({\\w*})`) over FLAN's own template tables, and FLAN's few-shot assembly formulas.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from flan_reference import ASCII_WS, flan_fewshot, flan_format, flan_niv2, niv2_x_shot, options_block

from flanmix.batch import Resolver, render_request
from flanmix.fewshot import flan_prompt
from flanmix.importers.flan_source import flan_key_slug, read_flan_tables
from flanmix.registry import load_task_file
from flanmix.sources import read_simple_cot_tsv
from flanmix.task import Example, compile_filter
from helpers import niv2_mirror_of_shared

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "task_registry" / "flan"
FIXTURES = REPO / "tests" / "fixtures" / "hub"
EOS = "<|endoftext|>"

# ------------------------------------------------------------------------------------------------- FLAN's rules




def dialog_block(turns: list[str]) -> str:
    """FLAN's `format_dialog` (deterministic)."""
    return "DIALOG:\n" + "\n- ".join(turns) + "\n- "




@pytest.fixture(scope="module")
def tables(shared_data):
    return read_flan_tables(shared_data / "templates" / "flan")


def spec_task(submix: str, name: str):
    return load_task_file(SPECS / submix / f"{name}.yaml")


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def examples(rows: list[tuple[dict, dict]]) -> list[tuple[Example, dict]]:
    """(raw row, FLAN features) pairs as (Example, features); the ids are those the features were drawn with."""
    return [(Example(f"row{i}", raw), features) for i, (raw, features) in enumerate(rows)]


def check_zero_shot(task, key: str, rows: list[tuple[dict, dict]], tables) -> int:
    """Every template of zs_opt (deterministic blocks) and zs_noopt on every (raw row, FLAN features) pair."""
    done = 0
    for i, (example, features) in enumerate(examples(rows)):
        for variant, table in (("zs_opt", tables.patterns), ("zs_noopt", tables.patterns_no_options)):
            for k, (inputs, targets) in enumerate(table[key]):
                got = task.render_full(example, template_type=variant, template_idx=k)
                assert (got.inputs, got.targets) == (flan_format(inputs, features), flan_format(targets, features)), \
                    (task.name, i, variant, k)
                done += 1
    return done


def check_few_shot(task, key: str, rows: list[tuple[dict, dict]], tables, patterns: list[int]) -> None:
    """x_shot prompts (two exemplars in the row's own pattern) in fs_opt and fs_noopt, and a template_mix prompt."""
    rows = examples(rows)
    for variant, table in (("fs_opt", tables.fewshot_patterns), ("fs_noopt", tables.fewshot_patterns_no_options)):
        items = task.prompts.items(variant)
        assert len(items) == len(table[key]), (task.name, variant)
        for k in patterns:
            picked = [rows[(k + j) % len(rows)] for j in range(3)]
            contexts = [task.context(example) for example, _ in picked]
            rng = random.Random(k)
            got = flan_prompt(task.prompts, items, k, contexts[0], [(c, k) for c in contexts[1:]],
                              make_block=task.prompts.block_maker(variant, False, rng), rng=rng)
            want = flan_fewshot(table[key][k], picked[0][1], [(table[key][k], f) for _, f in picked[1:]])
            assert (got.inputs, got.targets) == want, (task.name, variant, k)
    in_mix = [k for k, p in enumerate(tables.fewshot_patterns[key]) if p.in_template_mix]
    chosen, separator = [in_mix[-1], in_mix[0]], "\n\n\n"
    picked = [rows[j % len(rows)] for j in range(3)]
    contexts = [task.context(example) for example, _ in picked]
    rng = random.Random(0)
    got = flan_prompt(task.prompts, task.prompts.items("fs_opt"), in_mix[0], contexts[0],
                      list(zip(contexts[1:], chosen)), make_block=task.prompts.block_maker("fs_opt", False, rng),
                      rng=rng, separator=separator)
    pats = tables.fewshot_patterns[key]
    want = flan_fewshot(pats[in_mix[0]], picked[0][1], [(pats[c], f) for c, (_, f) in zip(chosen, picked[1:])],
                        separator)
    assert (got.inputs, got.targets) == want, (task.name, "template_mix")


# ================================================================================================= T0-SF
def flan_t0(row: dict, multiple_choice: bool) -> dict | None:
    """FLAN's `prep.t0` (None: FLAN's answer lookup fails, the row cannot be in FLAN's data)."""
    question = row["inputs_pretokenized"].replace("\n", " ").strip(ASCII_WS)
    answer = row["targets_pretokenized"].replace("\n", "").strip(ASCII_WS)
    if not multiple_choice:
        return {"question": question, "answer": answer}
    options = [c.replace("\n", "").strip(ASCII_WS) for c in row["answer_choices"]]
    if answer not in options:
        return None
    return {"question": question, "options": options, "answer": options[options.index(answer)]}


def t0_kind(task) -> str:
    return task.spec.templates.split("/", 1)[1]


def t0_features(task, row: dict) -> dict | None:
    kind = t0_kind(task)
    features = flan_t0(row, kind != "t0_question_answer")
    if features is not None and kind == "t0_multiple_choice_separated_options":
        features["options_"] = options_block(features["options"])  # FLAN runs format_options for these alone
    return features


def p3_from_t0_rendered(name: str, line: dict) -> dict:
    """A shared t0_rendered row (P3's prompt and target, as self-instruct kept them) as a P3 row; the answer
    choices (which these t0_multiple_choice prompts show in the text) recovered from the prompt."""
    prompt, target = line["prompt"], line["completion"].replace(EOS, "")
    if name.startswith("app_reviews"):
        choices = ["★" * k for k in range(1, 6)]
    elif name.startswith("dbpedia"):
        choices = [c.title() for c in re.search(r"categories (.*?), the text", prompt).group(1)
                   .replace(" or ", ", ").split(", ")]  # promptsource's "Company ||| Educational Institution ..."
    elif name.startswith("social_i_qa"):
        choices = prompt.rsplit("Possible answers: ", 1)[1].strip().split(", ")
    else:  # qasc: one "- choice" per line
        choices = re.findall(r"^ ?- (.*)$", prompt, re.M)
    return {"inputs": [0], "inputs_pretokenized": prompt, "targets": [0], "targets_pretokenized": target,
            "answer_choices": choices}


T0_LOCAL = ["app_reviews_convert_to_star_rating", "dbpedia_14_given_a_choice_of_categories_",
            "qasc_qa_with_separated_facts_1", "social_i_qa_Show_choices_and_generate_answer"]
T0_FIXTURE = ["adversarial_qa_dbert_answer_the_following_q", "duorc_ParaphraseRC_extract_answer",
              "wiki_qa_exercise", "quail_no_prompt_text", "wiki_qa_automatic_system",
              "cos_e_v1.11_description_question_option_text"]
T0_TRICKY = [  # made-up rows with what the real data has: inner and trailing newlines, CR, no-break spaces, tabs
    {"inputs": [1], "inputs_pretokenized": " Read this:\n\nA café\r\nopened.\nQuestion: where?\xa0\n",
     "targets": [2], "targets_pretokenized": "\tin Paris\xa0\n", "answer_choices": ["in Paris\xa0", "in Rome\n"]},
    {"inputs": [1], "inputs_pretokenized": "Pick one\n- yes\n- no\n\n", "targets": [2],
     "targets_pretokenized": " no\n", "answer_choices": [" yes", "no\n"]},
]


def test_t0_specs_are_flans_193_prompts_with_the_right_template_kind(shared_data):
    import csv

    with open(shared_data / "templates" / "flan" / "flan_collection_info.csv", encoding="utf-8") as handle:
        prompts = {r["Specific Task Category"] for r in csv.DictReader(handle) if r["Source"] == "T0"}
    specs = {p.stem for p in (SPECS / "t0").glob("*.yaml")}
    assert len(prompts) == 193 and specs == prompts
    kinds: dict[str, int] = {}
    for name in sorted(specs):
        task = load_task_file(SPECS / "t0" / f"{name}.yaml", compile_templates=False)
        spec, kind = task.spec, t0_kind(task)
        kinds[kind] = kinds.get(kind, 0) + 1
        assert (spec.collection, spec.cluster, spec.source.hub, spec.source.config) == ("T0", "t0", "bigscience/P3",
                                                                                        name)
        # Only the separated-options prompts get an options block (and so, randomized, a relabelled answer).
        assert (spec.options_field is not None) == (kind == "t0_multiple_choice_separated_options"), name
        assert (spec.filter is not None) == (kind != "t0_question_answer"), name
    assert kinds == {"t0_question_answer": 104, "t0_multiple_choice": 70, "t0_multiple_choice_separated_options": 19}
    assert set(T0_LOCAL) <= specs  # the 4 shared prompts among FLAN's (the 9 others are Flan 2021 datasets)


def t0_cases(shared_data) -> list[tuple[str, dict]]:
    cases = [(name, p3_from_t0_rendered(name, line)) for name in T0_LOCAL
             for line in jsonl(shared_data / "instruction" / "t0_rendered" / f"{name}.jsonl")[:3]]
    cases += [(name, row) for name in T0_FIXTURE for row in jsonl(FIXTURES / "bigscience__P3" / name / "train.jsonl")]
    cases += [(name, row) for name in ("wiki_qa_automatic_system", "wiki_qa_exercise",
                                       "adversarial_qa_dbert_answer_the_following_q") for row in T0_TRICKY]
    return cases


def test_t0_rows_render_as_flan_in_zero_shot(shared_data, tables):
    by_task: dict[str, list[tuple[dict, dict]]] = {}
    for name, row in t0_cases(shared_data):
        task = spec_task("t0", name)
        features = t0_features(task, row)
        keep = bool(compile_filter(task.spec.filter)(row, None)) if task.spec.filter else True
        assert keep == (features is not None), (name, row)  # the filter drops exactly the rows FLAN cannot map
        if features is not None:
            by_task.setdefault(name, []).append((row, features))
    assert set(by_task) == set(T0_LOCAL + T0_FIXTURE)
    assert by_task["dbpedia_14_given_a_choice_of_categories_"][0][1]["answer"] == "Company"
    assert by_task["wiki_qa_automatic_system"][-2][1]["question"] == "Read this:  A café\r opened. Question: where?\xa0"
    rendered = sum(check_zero_shot(spec_task("t0", name), t0_kind(spec_task("t0", name)), rows, tables)
                   for name, rows in by_task.items())
    assert rendered >= 2 * 10 * len(t0_cases(shared_data)) - 2 * 10 * 3  # every kept row, 10 templates, 2 variants


@pytest.mark.parametrize("name", ["qasc_qa_with_separated_facts_1", "wiki_qa_automatic_system",
                                  "adversarial_qa_dbert_answer_the_following_q"])
def test_t0_few_shot_prompts_are_flans(name, shared_data, tables):
    task = spec_task("t0", name)
    rows = [(row, t0_features(task, row)) for n, row in t0_cases(shared_data) if n == name]
    rows = [(r, f) for r, f in rows if f is not None]
    check_few_shot(task, t0_kind(task), rows, tables, patterns=[0, 1, 4, 9])


def test_t0_answer_is_relabelled_only_where_flan_shows_an_options_block(shared_data):
    """FLAN randomizes options (and rewrites the answer to the option's label) only for the separated-options
    prompts; a t0_multiple_choice prompt shows its choices inside P3's text, so its answer stays the text."""
    for name, row in t0_cases(shared_data):
        task = spec_task("t0", name)
        features = t0_features(task, row)
        if features is None or t0_kind(task) == "t0_question_answer":
            continue
        for seed in range(6):
            got = task.render_full(Example(f"s{seed}", row), template_type="zs_opt", template_idx=seed,
                                   randomize_options=True, seed=seed)
            if t0_kind(task) == "t0_multiple_choice":
                assert got.targets == features["answer"], (name, seed)
            else:  # the answer, or the stripped name of its option in the block the input shows
                label = got.targets.strip(ASCII_WS)
                assert label == features["answer"] or label in got.inputs, (name, seed)


def test_t0_rows_load_from_a_mirror_and_the_filter_drops_what_flan_drops(tmp_path, monkeypatch):
    rows = [*T0_TRICKY, {**T0_TRICKY[1], "targets_pretokenized": "maybe\n"}]
    write_jsonl(tmp_path / "bigscience__P3" / "wiki_qa_exercise" / "train.jsonl", rows)
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(tmp_path))
    task = spec_task("t0", "wiki_qa_exercise")
    loaded = [e.raw for split in ("train", "validation") for e in task.examples(split)]
    assert loaded == T0_TRICKY  # "maybe" is none of the choices: FLAN's lookup would fail on it


# ================================================================================================= CoT
COT = {"cot_gsm8k": "gsm8k", "cot_strategyqa": "strategyqa", "cot_creak": "creak", "cot_qasc": "qasc",
       "cot_esnli": "esnli", "cot_ecqa": "ecqa", "cot_sensemaking": "sensemaking", "stream_aqua": "aqua",
       "stream_qed": "qed"}
COT_SHARED = ("gsm8k", "strategyqa", "creak", "qasc", "ecqa", "sensemaking", "aqua")  # esnli, qed: fixtures only


def flan_cot(line: str) -> dict:
    """FLAN's `simple_cot_tsv` on one line of the TSV."""
    fields = line.split("\t")
    return {"question": fields[0].replace("\\n", "\n"), "answer": fields[1],
            "chain_of_thought": fields[2].replace("\\n", "\n")}


def cot_lines(shared_data: Path, dataset: str) -> list[str]:
    """The first lines of a dataset's TSV (shared copy of FLAN's file, or the fixture), plus the real lines whose
    fields carry leading or trailing whitespace (FLAN keeps it)."""
    shared = shared_data / "instruction" / "flan_cot" / f"{dataset}_train.tsv"
    path = shared if shared.is_file() else FIXTURES / "google-research__FLAN/flan/v2/cot_data" / f"{dataset}_train.tsv"
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    odd = [ln for ln in lines if any(f != f.strip() for f in flan_cot(ln).values())]
    return lines[:3] + odd[:2]


@pytest.fixture(scope="module")
def cot_mirror(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cot_mirror")
    folder = root / "google-research__FLAN" / "flan" / "v2" / "cot_data"
    folder.mkdir(parents=True)
    for dataset in COT.values():
        (folder / f"{dataset}_train.tsv").write_text("".join(ln + "\n" for ln in cot_lines(shared_data, dataset)),
                                                     encoding="utf-8")
    return root


def cot_key(name: str) -> str:
    parent = name.removesuffix("_ii")
    kind, dataset = parent.split("_", 1)
    return f"{kind}_input_inversion_{dataset}" if name.endswith("_ii") else parent


def test_cot_specs_are_flans_nine_datasets_and_their_inversions():
    names = {p.stem for p in (SPECS / "cot").glob("*.yaml")}
    assert names == set(COT) | {f"{n}_ii" for n in COT}
    for name in names:
        spec = spec_task("cot", name).spec
        assert (spec.collection, spec.cluster, spec.source.repo, spec.source.format) == (
            "CoT", "cot", "google-research/FLAN", "simple_cot_tsv")
        assert spec.source.files == f"flan/v2/cot_data/{COT[name.removesuffix('_ii')]}_train.tsv"
        assert spec.templates == f"flan/{flan_key_slug(cot_key(name))}"
        assert spec.inversion_of == (name[:-3] if name.endswith("_ii") else None)


@pytest.mark.parametrize("name", sorted(COT) + sorted(f"{n}_ii" for n in COT))
def test_cot_rows_render_as_flan(name, cot_mirror, shared_data, tables, monkeypatch):
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(cot_mirror))
    task = spec_task("cot", name)
    dataset = COT[name.removesuffix("_ii")]
    lines = cot_lines(shared_data, dataset)
    loaded = [e.raw for split in ("train", "validation") for e in task.examples(split)]
    assert sorted(map(json.dumps, loaded)) == sorted(json.dumps(flan_cot(ln)) for ln in lines)
    rows = [(flan_cot(ln), flan_cot(ln)) for ln in lines]
    check_zero_shot(task, cot_key(name), rows, tables)
    check_few_shot(task, cot_key(name), rows, tables, patterns=[0, 3, 7])


def test_cot_keeps_flans_whitespace(shared_data, tmp_path):
    """sensemaking's questions end in a (literal) newline, strategyqa's in a space: FLAN strips neither."""
    assert all(r["question"].endswith("\n") for r in map(flan_cot, cot_lines(shared_data, "sensemaking")))
    assert any(r["question"].endswith(" ") for r in map(flan_cot, cot_lines(shared_data, "strategyqa")))
    path = tmp_path / "x_train.tsv"
    path.write_text('"Quoted" q\\nwith tab-free text \t yes \t step 1\\nstep 2\textra\n', encoding="utf-8")
    assert list(read_simple_cot_tsv(path)) == [
        {"question": '"Quoted" q\nwith tab-free text ', "answer": " yes ", "chain_of_thought": " step 1\nstep 2"}]


# ================================================================================================= Dialog
DIALOG = {"wiki_dialog": ("djaym7__wiki_dialog/OQ", "wiki_dialog"), "qrecc": ("svakulenk0__qrecc/default", "qrecc")}


def flan_dialog(name: str, row: dict, turn: int) -> dict | None:
    """FLAN's `wiki_dialog` / `filter_qrecc` + `qrecc` with the drawn answer turn, then `format_dialog`."""
    if name.startswith("qrecc"):
        if row["Turn_no"] <= 6:
            return None
        dialog = row["Context"]
    else:
        dialog = row["utterances"][1:]  # the first utterance is the assistant's preamble
    maxval = min(int(len(dialog) / 2), 20)
    assert turn in range(1, 2 * maxval, 2), (name, turn, len(dialog))  # idx = uniform[0, maxval) * 2 + 1
    return {"dialog_": dialog_block(dialog[:turn]), "answer": dialog[turn]}


DIALOG_TRICKY = {  # made-up rows: long dialogs (FLAN's 20-turn limit), turns with newlines and spaces
    "wiki_dialog": [{"pid": "x", "title": "T", "passage": "P", "sentences": ["P"],
                     "utterances": ["I am your assistant."] + [f" turn {t}\nline two " for t in range(50)],
                     "author_num": [0, 1] * 25 + [0]}],
    "qrecc": [{"Context": [f"q/a {t} " for t in range(46)], "Question": "Q?", "Rewrite": "R?", "Answer": "A.",
               "Answer_URL": "", "Conversation_no": 99, "Turn_no": 24, "Conversation_source": "nq"},
              {"Context": ["a", "b"] * 6, "Question": "Q?", "Rewrite": "R?", "Answer": "A.", "Answer_URL": "",
               "Conversation_no": 98, "Turn_no": 6, "Conversation_source": "quac"}],
}


def dialog_rows(name: str) -> list[dict]:
    folder, _ = DIALOG[name.removesuffix("_ii")]
    return jsonl(FIXTURES / folder / "train.jsonl") + DIALOG_TRICKY[name.removesuffix("_ii")]


@pytest.mark.parametrize("name", ["wiki_dialog", "wiki_dialog_ii", "qrecc", "qrecc_ii"])
def test_dialog_rows_render_as_flan(name, tables):
    task = spec_task("dialog", name)
    key = f"{name[:-3]}_input_inversion" if name.endswith("_ii") else name
    assert task.spec.templates == f"flan/{key}" and task.spec.collection == "Dialog"
    kept = [raw for raw in dialog_rows(name) if compile_filter(task.spec.filter)(raw, None)]
    assert all(raw["Turn_no"] <= 6 for raw in dialog_rows(name) if raw not in kept)  # only filter_qrecc drops
    # The answer turn is drawn per example (seeded by its id), FLAN's draw is checked in flan_dialog.
    rows = [(raw, flan_dialog(name, raw, task.context(Example(f"row{i}", raw))["turn"])) for i, raw in enumerate(kept)]
    assert len(rows) >= 4
    check_zero_shot(task, key, rows, tables)
    check_few_shot(task, key, rows, tables, patterns=[0, 5, 9])


@pytest.mark.parametrize("name", ["wiki_dialog", "qrecc"])
def test_dialog_turn_draw_covers_flans_range(name):
    """Over many examples of one long dialog, the drawn answer turn takes every value FLAN's draw can take."""
    task = spec_task("dialog", name)
    raw = DIALOG_TRICKY[name][0]
    turns = {task.context(Example(f"e{i}", raw))["turn"] for i in range(400)}
    assert turns == set(range(1, 40, 2))  # min(len / 2, 20) = 20 choices


# ================================================================================================= NIv2
MMLU = set(range(685, 738)) | {664, 665, 666, 667}  # FLAN's NIV2_MMLU_TASK_KEYS, by task number


@pytest.fixture(scope="module")
def niv2_mirror(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("niv2_mirror")
    tasks = niv2_mirror_of_shared(shared_data, root)
    made_up = json.loads((FIXTURES / "allenai__natural-instructions/tasks/task685_made_up_mmlu.json").read_text())
    (tasks / "task667_made_up_mmlu.json").write_text(json.dumps({**made_up, "Instances": [
        {**made_up["Instances"][0], "id": "task667-x1"}]}), encoding="utf-8")
    return root


def niv2_task_files(shared_data: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((shared_data / "instruction" / "natural_instructions").glob("task*.json"))}


def test_niv2_spec_excludes_flans_57_mmlu_tasks():
    spec = spec_task("niv2", "tfds_natural_instructions").spec
    assert (spec.name, spec.collection, spec.cluster, spec.templates) == (
        "tfds_natural_instructions", "NIv2", "niv2", "flan/natinst_v2")
    keep = compile_filter(spec.filter)
    assert len(MMLU) == 57
    for number in range(1, 1700):
        assert bool(keep({"id": f"task{number:03d}-abc"}, None)) == (number not in MMLU), number


def test_niv2_rows_load_and_render_as_flan(niv2_mirror, shared_data, tables, monkeypatch):
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(niv2_mirror))
    task = spec_task("niv2", "tfds_natural_instructions")
    files = niv2_task_files(shared_data)
    loaded = {e.example_id: e for split in ("train", "validation") for e in task.examples(split)}
    want = {inst["id"]: (data, inst) for data in files.values() for inst in data["Instances"]}
    assert set(loaded) == set(want)  # every real instance; the made-up task667 (MMLU-derived) is dropped
    rows = {}
    for stem, data in files.items():
        for inst in data["Instances"][:2]:
            rows.setdefault(stem, []).append((loaded[inst["id"]].raw, flan_niv2(data, inst)))
    for pairs in rows.values():
        check_zero_shot(task, "natinst_v2", pairs, tables)


def test_niv2_inline_few_shot_patterns_get_flans_fields(niv2_mirror, shared_data, tables, monkeypatch):
    """FLAN's fs_opt `template_mix_five_shot` for NIv2: the inline patterns over the row and its task's positive
    example. The spec's fields feed the shipped `flan/natinst_v2_inline_fs` set exactly as FLAN fills them."""
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(niv2_mirror))
    task = spec_task("niv2", "tfds_natural_instructions")
    loaded = {e.example_id: e for e in task.examples("train") + task.examples("validation")}
    resolver = Resolver()
    patterns = tables.inline_fs_patterns["natinst_v2"]
    assert len(patterns) == 10
    for stem, data in niv2_task_files(shared_data).items():
        inst = data["Instances"][0]
        context = task.context(loaded[inst["id"]])
        features = flan_niv2(data, inst)
        for k, (inputs, targets) in enumerate(patterns):
            got = render_request({"templates": "flan/natinst_v2_inline_fs", "variant": "zs_opt", "template": k,
                                  "row": context}, resolver)
            assert (got.inputs, got.targets) == (flan_format(inputs, features), flan_format(targets, features)), \
                (stem, k)


def test_niv2_x_shot_with_two_exemplars_of_the_rows_task_is_flans(niv2_mirror, shared_data, tables, monkeypatch):
    """FLAN's other fs_opt half for NIv2: x_shot with two exemplars of the row's own task, placed after the
    task's Definition. Inputs are FLAN's byte for byte. FLAN's target is `targets + example_separator`, never
    stripped (`"28486\n****\n"`): a quirk of its NIv2 path that flanmix does not copy (its target is the output)."""
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(niv2_mirror))
    task = spec_task("niv2", "tfds_natural_instructions")
    loaded = {e.example_id: e for e in task.examples("train") + task.examples("validation")}
    items = task.prompts.items("fs_opt")
    patterns = tables.fewshot_patterns["natinst_v2"]
    assert len(items) == len(patterns) == 10
    for n, (stem, data) in enumerate(niv2_task_files(shared_data).items()):
        insts = data["Instances"][:3]
        k = n % len(patterns)
        contexts = [task.context(loaded[i["id"]]) for i in insts]
        rng = random.Random(n)
        got = flan_prompt(task.prompts, items, k, contexts[0], [(c, k) for c in contexts[1:]],
                          make_block=task.prompts.block_maker("fs_opt", False, rng), rng=rng)
        features = [flan_niv2(data, i) for i in insts]
        inputs, targets = niv2_x_shot(patterns[k], features[0], features[1:])
        assert got.inputs == inputs, (stem, k)
        output = flan_format(patterns[k].targets, features[0])
        assert targets == output + patterns[k].example_separator  # FLAN's quirk ("28486\n****\n" for pattern 4)
        assert got.targets == output.strip(ASCII_WS), (stem, k)

"""NIv2 as FLAN renders and mixes it: fs_opt rows in FLAN's two modes (the inline patterns, `template_mix_five_shot`;
x_shot with exactly 2 exemplars of the row's own NIv2 task, `template_0to10_x_shot`), exemplars drawn only from the
row's task (`few_shot_group`), and the per-task layout (`split_by_group`: one leaf per NIv2 task at min(cap, rows)).

References are written independently (tests/flan_reference.py): FLAN's NIv2 row (`lookup_posex_fn`), its
substitution over its own template tables, and its NIv2 x_shot formula; the rows are the real Super-NaturalInstructions
samples in ../shared/data and hand-made task files.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from itertools import permutations
from pathlib import Path

import pytest
from flan_reference import ASCII_WS, flan_format, flan_niv2, niv2_x_shot

from flanmix.cli import main
from flanmix.core.errors import FlanmixError
from flanmix.fewshot import FewShotDropped
from flanmix.importers.flan_source import read_flan_tables
from flanmix.mixture import as_spec, resolve
from flanmix.registry import Registry, load_task_file
from flanmix.stats import mixture_stats
from helpers import niv2_mirror_of_shared

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "task_registry" / "flan" / "niv2" / "tfds_natural_instructions.yaml"
FIXTURES = REPO / "tests" / "fixtures" / "hub"
MMLU = set(range(685, 738)) | {664, 665, 666, 667}  # FLAN's NIV2_MMLU_TASK_KEYS, by task number
# FLAN's constants.py T_NAME_TO_NUM_CASES['tfds_natural_instructions']: x_shot and five_shot both 5,000,000, so
# seqio mixes the two fs_opt tasks of FS_OPT_TEMPLATES at equal rates.
FLAN_FS_OPT_RATES = {"five_shot": 5_000_000, "x_shot": 5_000_000}


@pytest.fixture(scope="module")
def tables(shared_data):
    return read_flan_tables(shared_data / "templates" / "flan")


@pytest.fixture(scope="module")
def task_files(shared_data) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((shared_data / "instruction" / "natural_instructions").glob("task*.json"))}


@pytest.fixture(scope="module")
def mirror(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("niv2_real")
    niv2_mirror_of_shared(shared_data, root)
    return root


@pytest.fixture()
def task(mirror, monkeypatch):
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(mirror))
    return load_task_file(SPEC)


def by_id(task) -> dict:
    return {e.example_id: e for split in ("train", "validation") for e in task.examples(split)}


def train_ids_by_file(task, task_files) -> dict[str, list[str]]:
    """Training instance ids per task file, grouped independently of flanmix's groups (by the file's instances)."""
    train = {e.example_id for e in task.examples("train")}
    return {stem: [i["id"] for i in data["Instances"] if i["id"] in train] for stem, data in task_files.items()}


# ------------------------------------------------------------------------------------------------- rendering
def test_fs_opt_template_mix_rows_are_flans_inline_patterns(task, task_files, tables):
    """FLAN's `template_mix_five_shot` for NIv2: INLINE_FS_PATTERNS[natinst_v2][K] formatted over the row and its
    task's first positive example, as a zero-shot task (nothing stripped)."""
    rows, inline = by_id(task), tables.inline_fs_patterns["natinst_v2"]
    assert len(inline) == len(task.prompts.items("fs_opt")) == 10
    done = 0
    for data in task_files.values():
        for inst in data["Instances"][:3]:
            features = flan_niv2(data, inst)
            for k, (inputs, targets) in enumerate(inline):
                got = task.render_full(rows[inst["id"]], template_type="fs_opt", template_idx=k, seed=k,
                                       fewshot_mode="template_mix")
                assert (got.inputs, got.targets) == (flan_format(inputs, features), flan_format(targets, features))
                done += 1
    assert done == 10 * sum(min(3, len(d["Instances"])) for d in task_files.values())


def test_fs_opt_x_shot_rows_are_flans_with_two_exemplars_of_the_rows_own_task(task, task_files, tables):
    """FLAN's `template_0to10_x_shot` for NIv2: the prompt is FLAN's formula over the row and two distinct other
    training instances of the same task file, for some ordered pair; the target is the pattern's target (FLAN
    appends the example separator there and never strips it: flanmix does not copy that)."""
    rows, patterns = by_id(task), tables.fewshot_patterns["natinst_v2"]
    train = train_ids_by_file(task, task_files)
    checked = 0
    for stem, data in task_files.items():
        instances = {i["id"]: i for i in data["Instances"]}
        for inst in data["Instances"][:4]:
            others = [i for i in train[stem] if i != inst["id"]]
            if len(others) < 2:
                continue
            row = flan_niv2(data, inst)
            for k, pattern in enumerate(patterns):
                for variant in ("fs_opt", "fs_noopt"):
                    got = task.render_full(rows[inst["id"]], template_type=variant, template_idx=k, seed=7 * k,
                                           fewshot_mode="x_shot")
                    want = {niv2_x_shot(pattern, row, [flan_niv2(data, instances[a]), flan_niv2(data, instances[b])])[0]
                            for a, b in permutations(others, 2)}
                    assert got.inputs in want, (stem, k, variant)
                    assert got.targets == flan_format(pattern.targets, row).strip(ASCII_WS)
                    checked += 1
    assert checked >= 10 * 2 * 20


def test_exemplars_are_a_uniform_pair_of_the_rows_task_never_the_row_itself(task, task_files, tables):
    """Over many seeds every ordered pair of the other training rows of the row's task turns up, with roughly equal
    frequency, and nothing else does (not the row, not another task's row)."""
    rows, pattern = by_id(task), tables.fewshot_patterns["natinst_v2"][4]  # "Q: ... A: ...", separator "\n****\n"
    train = train_ids_by_file(task, task_files)
    stem = max(train, key=lambda s: len(train[s]))
    data = task_files[stem]
    instances = {i["id"]: i for i in data["Instances"]}
    target = instances[train[stem][0]]
    others = train[stem][1:]
    outputs = {niv2_x_shot(pattern, flan_niv2(data, target), [flan_niv2(data, instances[a]),
                                                                flan_niv2(data, instances[b])])[0]: (a, b)
               for a, b in permutations(others, 2)}
    assert len(outputs) == len(others) * (len(others) - 1)  # distinct prompts: a draw is read off its prompt
    n = 60 * len(outputs)
    seen = Counter(outputs[task.render_full(rows[target["id"]], template_type="fs_opt", template_idx=4, seed=s,
                                            fewshot_mode="x_shot").inputs] for s in range(n))
    assert set(seen) == set(outputs.values())
    expected = n / len(outputs)
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in seen.values()), seen


def test_fs_opt_splits_evenly_between_flans_two_tasks(task):
    """Without a forced mode, fs_opt rows are inline (five_shot) or x_shot at FLAN's rates (equal)."""
    share = FLAN_FS_OPT_RATES["five_shot"] / sum(FLAN_FS_OPT_RATES.values())
    n = inline = 0
    for seed in range(25):
        for i, example in enumerate(task.examples("train")):
            k = (seed + i) % 10
            got = task.render_full(example, template_type="fs_opt", template_idx=k, seed=seed)
            inline += got == task.render_full(example, template_type="fs_opt", template_idx=k, seed=seed,
                                              fewshot_mode="template_mix")
            n += 1
    assert abs(inline / n - share) < 4 * math.sqrt(share * (1 - share) / n), inline / n


def write_task(folder: Path, number: int, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"task{number:03d}_tiny_{n}.json").write_text(json.dumps({
        "Definition": [f"Definition {number}."],
        "Positive Examples": [{"input": "pos in", "output": "pos out", "explanation": "pos why"}],
        "Negative Examples": [],
        "Instances": [{"id": f"task{number:03d}-r{i}", "input": f"in {number}.{i}", "output": [f"out {number}.{i}"]}
                      for i in range(n)]}), encoding="utf-8")


def tiny_task(tmp_path, monkeypatch, sizes: dict[int, int]):
    tasks = tmp_path / "mirror" / "allenai__natural-instructions" / "tasks"
    for number, n in sizes.items():
        write_task(tasks, number, n)
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(tmp_path / "mirror"))
    spec = tmp_path / "reg" / "niv2.yaml"
    spec.parent.mkdir()
    spec.write_text(SPEC.read_text().replace("verified: true", "verified: true\nvalidation_fraction: 0.0"))
    return load_task_file(spec, registry_root=spec.parent)


def test_a_task_with_two_rows_shows_the_row_itself_and_one_row_drops(tmp_path, monkeypatch):
    """FLAN needs 2 exemplars of the task: with only 2 rows the row itself is one of them (unavoidable); a task with
    a single row has no prompt (the row is dropped, counted by the build)."""
    task = tiny_task(tmp_path, monkeypatch, {11: 2, 12: 1, 13: 5})
    rows = {e.example_id: e for e in task.examples("train")}
    for seed in range(20):
        got = task.render_full(rows["task011-r0"], template_type="fs_opt", template_idx=0, seed=seed,
                               fewshot_mode="x_shot")
        assert got.inputs.count("in 11.0") == 2 and got.inputs.count("in 11.1") == 1
        assert "12." not in got.inputs and "13." not in got.inputs
        with pytest.raises(FewShotDropped):
            task.render_full(rows["task012-r0"], template_type="fs_opt", template_idx=0, seed=seed,
                             fewshot_mode="x_shot")
        other = task.render_full(rows["task013-r2"], template_type="fs_opt", template_idx=0, seed=seed,
                                 fewshot_mode="x_shot")
        assert other.inputs.count("in 13.2") == 1 and sum(f"in 13.{i}" in other.inputs for i in range(5)) == 3
    assert {g: list(rows) for g, rows in task.groups().items()} == {
        "task011_tiny_2": [0, 1], "task012_tiny_1": [2], "task013_tiny_5": [3, 4, 5, 6, 7]}


# ------------------------------------------------------------------------------------------------- per task
def test_split_by_group_makes_one_leaf_per_niv2_task_at_min_cap_rows(task, task_files, mirror, monkeypatch):
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(mirror))
    train = train_ids_by_file(task, task_files)
    cap = 5
    spec, _ = as_spec({"rate": {"by": "examples", "cap": cap},
                       "components": [{"collection": "NIv2", "split_by_group": True}]})
    leaves = resolve(spec, Registry.discover()).leaves
    names = {stem for stem in task_files if int(stem.split("_")[0][4:]) not in MMLU and train[stem]}
    assert [leaf.task.name for leaf in leaves] == [s for s in sorted(task_files) if s in names]
    assert any(len(train[s]) > cap for s in names) and any(len(train[s]) < cap for s in names)  # both sides
    weights = {s: min(cap, len(train[s])) for s in names}
    total = sum(weights.values())
    for leaf in leaves:
        assert leaf.rate == pytest.approx(weights[leaf.task.name] / total)
        assert sorted(e.example_id for e in leaf.task.examples("train")) == sorted(train[leaf.task.name])
        assert leaf.task.spec.collection == "NIv2" and leaf.task.seed_name == "tfds_natural_instructions"
    # A row renders the same in its task's leaf as in the one-task layout (same seeds), in every variant.
    leaf = leaves[0]
    example = leaf.task.examples("train")[0]
    for variant, k in (("zs_opt", 3), ("fs_opt", 5)):
        assert leaf.task.render_full(example, template_type=variant, template_idx=k, seed=2) == \
            task.render_full(example, template_type=variant, template_idx=k, seed=2)


def test_per_task_mixture_is_flan2022_but_niv2_split():
    a, _ = as_spec(REPO / "mixtures" / "flan2022.yaml")
    b, _ = as_spec(REPO / "mixtures" / "flan2022-niv2-per-task.yaml")
    assert a.components[2].name == b.components[2].name == "niv2"
    assert [c.split_by_group for c in b.components[2].mixture.components] == [True]
    dumped = b.model_dump(exclude={"name", "description"})
    dumped["components"][2]["mixture"]["components"][0]["split_by_group"] = False
    assert a.model_dump(exclude={"name", "description"}) == dumped


def test_per_task_build_reports_the_niv2_share(tmp_path, capsys):
    mix = tmp_path / "small.yaml"
    mix.write_text("seed: 3\nsize: {examples: 4000}\ndedup: false\ncomponents: [{mixture: flan2022-niv2-per-task}]\n")
    out = tmp_path / "out"
    assert main(["build", str(mix), "--out", str(out), "--quiet", "--hub-mirror", str(FIXTURES)]) == 0, \
        capsys.readouterr().err
    stats = mixture_stats(out)
    niv2 = next(c for c in stats["components"] if c["name"].endswith("niv2"))
    assert niv2["target"] == pytest.approx(0.20) and abs(niv2["realized"] - 0.20) <= 0.01
    assert abs(niv2["template_types"]["fs_opt"]["realized"] - 0.5) <= 0.03
    names = {p["name"] for p in stats["proportions"]["task"]}
    assert {"task001_made_up_a", "task002_made_up_b"} <= names and "tfds_natural_instructions" not in names
    assert not any("task685" in n for n in names)  # MMLU-derived: filtered before the split into tasks


# ------------------------------------------------------------------------------------------------- bad input
def hostile(tmp_path: Path, monkeypatch, capsys, edit, mixture: str = "") -> str:
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(FIXTURES))
    reg = tmp_path / "reg"
    reg.mkdir()
    text = edit(SPEC.read_text().replace("name: tfds_natural_instructions", "name: niv2_mine"))
    (reg / "niv2_mine.yaml").write_text(text)
    mix = tmp_path / "mix.yaml"
    mix.write_text(mixture or "size: {examples: 200}\ntemplate_types: {fs_opt: 1}\ncomponents: [{task: niv2_mine}]\n")
    code = main(["build", str(mix), "--out", str(tmp_path / "out"), "--quiet", "--registry", str(reg)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
    return err


def test_a_group_expression_that_fails_is_one_line(tmp_path, monkeypatch, capsys):
    err = hostile(tmp_path, monkeypatch, capsys,
                  lambda s: s.replace("few_shot_group: task_name", "few_shot_group: \"(task_name | int) // 0\""))
    assert "few_shot_group" in err and "niv2_mine" in err


def test_a_group_naming_a_missing_column_is_one_line(tmp_path, monkeypatch, capsys):
    err = hostile(tmp_path, monkeypatch, capsys,
                  lambda s: s.replace("few_shot_group: task_name", "few_shot_group: nlp_task"))
    assert "few_shot_group" in err and "'nlp_task' is not in the data" in err


def test_an_empty_group_is_one_line(tmp_path, monkeypatch, capsys):
    split = "components: [{collection: NIv2, split_by_group: true}]\nsize: {examples: 50}\n"
    err = hostile(tmp_path, monkeypatch, capsys,
                  lambda s: s.replace("few_shot_group: task_name", "few_shot_group: \"''\"")
                  .replace("collection: NIv2", "collection: Mine"), mixture=split.replace("NIv2", "Mine"))
    assert "few_shot_group is empty" in err


def test_split_by_group_without_a_group_is_one_line(tmp_path, monkeypatch, capsys):
    err = hostile(tmp_path, monkeypatch, capsys,
                  lambda s: s.replace("few_shot_group: task_name\n", "").replace("NIv2", "Mine"),
                  mixture="size: {examples: 50}\ncomponents: [{collection: Mine, split_by_group: true}]\n")
    assert "split_by_group" in err and "no few_shot_group" in err


def test_a_template_mix_set_of_the_wrong_length_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(FIXTURES))
    spec = tmp_path / "reg" / "bad.yaml"
    spec.parent.mkdir()
    spec.write_text(SPEC.read_text().replace("flan/natinst_v2_inline_fs", "flan/cot_input_inversion_gsm8k"))
    with pytest.raises(FlanmixError) as err:
        load_task_file(spec, registry_root=spec.parent)
    assert err.value.field == "template_mix_templates" and "fs_opt" in err.value.message

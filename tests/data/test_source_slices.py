"""Split slices of hub sources (`split: train[:30000]`), `explode` (one source row -> one row per item of its list
columns) and the hub mirror's revision in a build's input hash.

Slices are checked against `datasets` itself: the same split string applied by `datasets.load_dataset` to a local
Parquet file (offline) selects the same rows as flanmix does from a mirror and online."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flanmix.cli import main
from flanmix.core.errors import FlanmixError
from flanmix.hub import hub_rows, mirror_sources, using_mirror
from flanmix.registry import load_task_file
from flanmix.slicing import explode_row, parse_split
from flanmix.sources import iter_source
from flanmix.spec import SourceSpec
from flanmix.writer import read_manifest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "hub"
SPLITS = ["train", "train[:]", "train[:30]", "train[10:25]", "train[:-7]", "train[-7:]", "train[-12:-3]",
          "train[5:]", "train[:10%]", "train[33%:67%]", "train[-25%:]", "train[:-100%]", "train[40:60]",
          "train[:1000]", "train[-1000:5]", "train[0:0]", "train[20:10]", "train[:-41]"]


def write_parquet(folder: Path, n: int, name: str = "train") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    pq.write_table(pa.table({"i": list(range(n)), "text": [f"row {i}" for i in range(n)]}), path)
    return path


def datasets_rows(path: Path, split: str, cache: Path) -> list[int] | None:
    """The rows `datasets` selects for a split string on a local Parquet file (None: it refuses the slice)."""
    try:
        loaded = datasets.load_dataset("parquet", data_files={"train": str(path)}, split=split,
                                       cache_dir=str(cache))
    except ValueError as err:  # "Instruction ... corresponds to no data!"
        assert "no data" in str(err)
        return None
    return loaded["i"]


@pytest.mark.parametrize("n", [41, 7])
def test_slices_select_the_rows_datasets_selects_from_a_mirror(tmp_path, n):
    path = write_parquet(tmp_path / "mirror" / "demo__nums" / "default", n)
    with using_mirror([tmp_path / "mirror"]):
        for split in SPLITS:
            want = datasets_rows(path, split, tmp_path / "cache")
            source = SourceSpec(hub="demo/nums", split=split)
            if not want:  # `datasets` refuses the slice, or (train[20:10]) gives no rows: a build has none to use
                with pytest.raises(FlanmixError, match="has no rows"):
                    hub_rows(source, task_name="nums")
                continue
            got = hub_rows(source, task_name="nums")
            assert [row["i"] for _, row in got] == want, split
            assert [position for position, _ in got] == want  # a row keeps its position in the whole split


def test_online_slices_match_datasets_and_ids_are_positions(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "data", 41)
    whole = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "c1"))
    calls = []

    def load_dataset(name, config=None, split=None, revision=None, **kwargs):
        calls.append(split)
        return whole

    for split in ("train[:-7]", "train[10:25]", "train[33%:67%]"):
        want = datasets_rows(path, split, tmp_path / "cache")
        with monkeypatch.context() as patch:
            patch.setattr(datasets, "load_dataset", load_dataset)
            ids = [(i, r["i"]) for i, r in iter_source(SourceSpec(hub="demo/nums", split=split), task_name="nums",
                                                        base_dir=tmp_path)]
        assert [r for _, r in ids] == want and [i for i, _ in ids] == [f"demo/nums:train:{r}" for r in want]
    assert calls == ["train"] * 3  # the whole split is loaded (and cached by `datasets`), then sliced


def test_unsliced_example_ids_are_unchanged(tmp_path):
    write_parquet(tmp_path / "m" / "demo__nums" / "default", 5)
    with using_mirror([tmp_path / "m"]):
        ids = [i for i, _ in iter_source(SourceSpec(hub="demo/nums"), task_name="t", base_dir=tmp_path)]
    assert ids == [f"demo/nums:train:{k}" for k in range(5)]


@pytest.mark.parametrize("split, why", [
    ("train[:x]", "malformed split"), ("train+validation", "malformed split"), ("train[1%:5]", "mixes rows"),
    ("train[:150%]", "between -100% and 100%"), ("train[1:2](closest)", "malformed split"), ("[1:2]", "malformed"),
    ("train[1:2:3]", "malformed split")])
def test_a_malformed_slice_is_one_error_naming_the_spec_file_and_field(tmp_path, split, why):
    spec = tmp_path / "t.yaml"
    spec.write_text(f"name: t\ncluster: c\nsource: {{hub: demo/nums, split: '{split}'}}\ntemplates: x\n")
    with pytest.raises(FlanmixError) as err:
        load_task_file(spec)
    text = str(err.value)
    assert str(spec) in text and "split" in text and why in text and "\n" not in text


def test_slices_apply_to_hub_sources_only():
    with pytest.raises(ValueError, match="slices apply to hub sources only"):
        SourceSpec(files="rows.jsonl", split="train[:10]")
    assert parse_split("train_xl[-200:]").bounds(1000) == (800, 1000)
    assert parse_split("validation[:10%]").bounds(1871) == (0, 187)  # closest rounding, as datasets


def test_mirror_stores_the_whole_split_once_for_tasks_slicing_it(tmp_path, monkeypatch):
    rows = [{"en": f"sentence {i}."} for i in range(50)]
    calls = []

    def load_dataset(name, config=None, split=None, revision=None, **kwargs):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    sources = [SourceSpec(hub="demo/para", config="enda", split=s) for s in ("train[:20]", "train[22:42]", "train")]
    notes: list[str] = []
    counts = mirror_sources(sources, tmp_path / "m", note=notes.append)
    assert counts == {"downloaded": 1, "skipped": 0} and calls == [("demo/para", "enda", "train")]
    assert notes == ["[1/1] hub:demo/para/enda:train: downloaded (50 rows)"]
    folder = tmp_path / "m" / "demo__para" / "enda"
    assert sorted(p.name for p in folder.iterdir()) == ["_info.json", "train.parquet"]
    assert pq.read_table(folder / "train.parquet").num_rows == 50
    with using_mirror([tmp_path / "m"]):
        first, second = (hub_rows(s, task_name="t") for s in sources[:2])
    assert [p for p, _ in first] == list(range(20)) and [p for p, _ in second] == list(range(22, 42))


def test_a_sampled_mirror_split_keeps_the_stored_rows_inside_the_slice(tmp_path):
    folder = tmp_path / "m" / "demo__para" / "enda"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text("".join(json.dumps({"k": k}) + "\n" for k in range(5)))
    info = {"splits": {"train": {"rows": 100000, "positions": [0, 1, 30200, 30201, 99999]}}}
    (folder / "_info.json").write_text(json.dumps(info))
    with using_mirror([tmp_path / "m"]):
        def read(split: str) -> list[tuple[int, int]]:
            return [(p, r["k"]) for p, r in hub_rows(SourceSpec(hub="demo/para", config="enda", split=split),
                                                     task_name="t")]
        assert read("train[:30000]") == [(0, 0), (1, 1)]
        assert read("train[30200:60200]") == [(30200, 2), (30201, 3)]
        assert read("train[-1:]") == [(99999, 4)]
        assert read("train") == list(zip([0, 1, 30200, 30201, 99999], range(5)))
        with pytest.raises(FlanmixError, match="has no rows"):
            read("train[60400:90400]")
        with pytest.raises(FlanmixError, match="cannot be sliced after explode"):  # the positions of the questions
            list(iter_source(SourceSpec(hub="demo/para", config="enda", split="train[:10]", explode=["k"]),
                             task_name="t", base_dir=tmp_path))
        for bad in ([0, 1, 2], [0, 1, 2, 3, 100000], [0, 2, 1, 3, 4], "all"):
            (folder / "_info.json").write_text(json.dumps({"splits": {"train": {"rows": 100000, "positions": bad}}}))
            with pytest.raises(FlanmixError, match="sample positions") as err:
                read("train")
            assert "_info.json" in str(err.value)


def test_the_paracrawl_tasks_read_flans_disjoint_slices_of_one_fixture_file():
    """true_case, fix_punct and word_segment (FLAN: train[:30000], train[30200:60200], train[60400:90400])."""
    flan = {"true_case": range(0, 30000), "fix_punct": range(30200, 60200), "word_segment": range(60400, 90400)}
    info = json.loads((FIXTURES / "ParaCrawl__para_crawl" / "enda" / "_info.json").read_text())["splits"]["train"]
    seen: dict[str, set[str]] = {}
    with using_mirror([FIXTURES]):
        for name, rows in flan.items():
            task = load_task_file(REPO / "task_registry" / "flan" / "flan2021" / f"{name}.yaml")
            ids = {e.example_id for split in ("train", "validation") for e in task.examples(split)}
            positions = {int(i.rsplit(":", 1)[1]) for i in ids}
            assert positions and positions <= set(rows) and positions <= set(info["positions"]), name
            seen[name] = ids
    assert not (seen["true_case"] & seen["fix_punct"]) and not (seen["fix_punct"] & seen["word_segment"])


# ---------------------------------------------------------------------------------------------- explode
DIALOG = {"id": "d1", "title": "T", "questions": ["q0", "q1", "q2"], "turns": [0, 1, 2],
          "answers": {"texts": [["a0"], ["a1"], ["a2"]], "starts": [[0], [5], [9]]}}


def test_explode_zips_list_columns_and_keeps_the_rest():
    rows = explode_row(DIALOG, ["questions", "turns", "answers.texts", "answers.starts"])
    assert rows == [{"id": "d1", "title": "T", "questions": f"q{k}", "turns": k,
                     "answers": {"texts": [f"a{k}"], "starts": [[0], [5], [9]][k]}} for k in range(3)]
    assert DIALOG["questions"] == ["q0", "q1", "q2"]  # the source row is not changed
    assert explode_row({"xs": []}, ["xs"]) == []  # an empty list: no rows


@pytest.mark.parametrize("row, paths, why", [
    ({"a": [1, 2], "b": [1]}, ["a", "b"], "a has 2, b has 1"),
    ({"a": [1, 2], "n": {"b": [1, 2, 3]}}, ["a", "n.b"], "a has 2, n.b has 3"),
    ({"a": [1, 2]}, ["a", "missing"], "'missing' is missing"),
    ({"a": [1, 2], "n": {"b": 1}}, ["a", "n.b.c"], "'n.b.c' is missing"),
    ({"a": "ab"}, ["a"], "is a str, not a list"),
    ({"a": None}, ["a"], "is a NoneType, not a list")])
def test_explode_refuses_hostile_rows(row, paths, why):
    with pytest.raises(ValueError, match=why.replace("(", r"\(")):
        explode_row(row, paths)


def write_rows_task(root: Path, rows: list[dict], *, source: str, extra: str = "") -> Path:
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "templates" / "qa.yaml").write_text('zero_shot:\n  - {input: "{{ q }}", target: "{{ a }}"}\n')
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = root / "qa.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: qa
        cluster: qa
        source: {source}
        fields: {{q: "{{{{ questions }}}}", a: "{{{{ answers.texts[0] }}}}"}}
        templates: templates/qa
        validation_fraction: 0
        """) + extra)
    return spec


def test_explode_runs_before_the_filter_and_ids_are_row_id_dash_k(tmp_path):
    rows = [DIALOG, {**DIALOG, "id": "d2", "questions": ["r0"], "turns": [0], "answers": {"texts": [["b0"]],
                                                                                          "starts": [[1]]}}]
    spec = write_rows_task(tmp_path, rows, source="{files: rows.jsonl, explode: [questions, answers.texts]}",
                           extra="filter: \"questions != 'q1'\"\n")
    task = load_task_file(spec)
    got = [(e.example_id, task.context(e)["q"], task.context(e)["a"]) for e in task.examples("train")]
    assert got == [("rows.jsonl:0-0", "q0", "a0"), ("rows.jsonl:0-2", "q2", "a2"), ("rows.jsonl:1-0", "r0", "b0")]


def test_explode_with_unequal_lengths_is_one_error_naming_task_row_and_field(tmp_path):
    bad = {**DIALOG, "answers": {"texts": [["a0"]], "starts": [[0]]}}
    spec = write_rows_task(tmp_path, [DIALOG, bad], source="{files: rows.jsonl, explode: [questions, answers.texts]}")
    with pytest.raises(FlanmixError) as err:
        load_task_file(spec).examples("train")
    text = str(err.value)
    assert "task 'qa', row rows.jsonl:1" in text and "source.explode" in text and "questions has 3" in text


def test_a_hub_slice_applies_to_the_exploded_rows(tmp_path):
    folder = tmp_path / "m" / "demo__dialogs" / "default"
    folder.mkdir(parents=True)
    dialogs = [{"questions": [f"d{d}q{k}" for k in range(n)]} for d, n in enumerate([3, 1, 4, 2])]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dialogs))
    # The same rule by hand: every question of every dialogue in order, then Python's slice of that list.
    flat = [(f"demo/dialogs:train:{d}-{k}", q) for d, r in enumerate(dialogs) for k, q in enumerate(r["questions"])]
    with using_mirror([tmp_path / "m"]):
        for split, want in (("train", flat), ("train[:5]", flat[:5]), ("train[-3:]", flat[-3:]),
                            ("train[2:-2]", flat[2:-2])):
            source = SourceSpec(hub="demo/dialogs", split=split, explode=["questions"])
            got = [(i, r["questions"]) for i, r in iter_source(source, task_name="t", base_dir=tmp_path)]
            assert got == want, split
        with pytest.raises(FlanmixError, match="exploded rows"):
            list(iter_source(SourceSpec(hub="demo/dialogs", split="train[10:]", explode=["questions"]),
                             task_name="t", base_dir=tmp_path))


def test_quac_reads_one_row_per_question_as_flans_tfds_copy():
    """FLAN's TFDS quac has one row per question; the hub's rows are dialogues (tests/fixtures/hub)."""
    fixture = FIXTURES / "allenai__quac" / "plain_text" / "train.jsonl"
    dialogs = [json.loads(line) for line in fixture.read_text(encoding="utf-8").splitlines()]
    task = load_task_file(REPO / "task_registry" / "flan" / "flan2021" / "quac.yaml")
    with using_mirror([FIXTURES]):
        examples = sorted((e for s in ("train", "validation") for e in task.examples(s)), key=lambda e: e.example_id)
    want = [(f"allenai/quac:train:{d}-{k}", q, a) for d, x in enumerate(dialogs)
            for k, (q, a) in enumerate(zip(x["questions"], x["orig_answers"]["texts"]))]
    assert len(want) > len(dialogs)
    # _process_quac: "CANNOTANSWER" removed, then ASCII whitespace stripped.
    clean = [(i, q.replace("CANNOTANSWER", "").strip(" \t\n\r\v\f"), a.replace("CANNOTANSWER", "").strip(
        " \t\n\r\v\f")) for i, q, a in want]
    assert [(e.example_id, task.context(e)["question"], task.context(e)["answer"]) for e in examples] == clean


# ---------------------------------------------------------------------------------------------- mirror revision
def revision_registry(root: Path) -> Path:
    (root / "templates").mkdir(parents=True)
    (root / "templates" / "t.yaml").write_text('zero_shot:\n  - {input: "{{ text }}", target: "{{ text }}"}\n')
    (root / "nums.yaml").write_text("name: nums\ncluster: c\nsource: {hub: demo/nums, split: 'train[:20]'}\n"
                                    "templates: t\n")
    (root / "mixtures").mkdir()  # a registry's mixtures/ folder holds no task specs
    (root / "mixtures" / "mix.yaml").write_text("name: mix\nsize: {examples: 30}\ndedup: false\n"
                                               "components: [{task: nums}]\n")
    return root


def build_hash(capsys, reg: Path, mirror: Path, out: Path) -> tuple[str, dict]:
    code = main(["build", str(reg / "mixtures" / "mix.yaml"), "--registry", str(reg), "--hub-mirror", str(mirror),
                 "--out", str(out), "--quiet", "--format", "jsonl"])
    assert code == 0, capsys.readouterr().err
    manifest = read_manifest(out)
    return manifest["spec_hash"], manifest["inputs"]["data_files"]


def test_the_mirror_revision_is_part_of_the_build_hash(tmp_path, capsys):
    reg = revision_registry(tmp_path / "reg")
    mirror = tmp_path / "mirror"
    folder = mirror / "demo__nums" / "default"
    write_parquet(folder, 41)
    plain, plain_inputs = build_hash(capsys, reg, mirror, tmp_path / "o0")
    hashes = {}
    for rev in ("aaaa", "bbbb"):
        (folder / "_info.json").write_text(json.dumps({"revision": None, "resolved_revision": rev,
                                                       "splits": {"train": {"rows": 41}}}))
        hashes[rev], inputs = build_hash(capsys, reg, mirror, tmp_path / f"o{rev}")
        assert inputs != plain_inputs
    assert len({plain, hashes["aaaa"], hashes["bbbb"]}) == 3
    # Same spec, same mirror snapshot: the same hash (and the same rows).
    again, _ = build_hash(capsys, reg, mirror, tmp_path / "again")
    assert again == hashes["bbbb"]
    assert (tmp_path / "again" / "manifest.json").is_file()


def test_without_a_mirror_revision_the_data_hash_is_the_source_settings_hash(tmp_path, capsys):
    """A mirror without `_info.json` (tests/fixtures/hub) hashes hub sources as builds without a mirror do: the
    sha256 of the source's settings."""
    import hashlib

    reg = revision_registry(tmp_path / "reg")
    write_parquet(tmp_path / "mirror" / "demo__nums" / "default", 41)
    _, inputs = build_hash(capsys, reg, tmp_path / "mirror", tmp_path / "o")
    # nums.yaml's source with every setting a source had before `explode` existed: hashes stay what they were.
    source = {"builtin": None, "examples": 1000, "seed": 0, "files": None, "format": None, "columns": None,
              "hub": "demo/nums", "config": None, "split": "train[:20]", "revision": None, "repo": None}
    settings = json.dumps(source, sort_keys=True, separators=(",", ":"))
    assert inputs == {"hub:demo/nums:train[:20]": hashlib.sha256(settings.encode()).hexdigest()}

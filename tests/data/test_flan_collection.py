"""The Flan collection end to end: `flan2021` and `flan2022` build from the offline fixture mirror
(tests/fixtures/hub), flan2022's realized submix shares and template-type splits match FLAN's, the T0/NIv2/CoT
parts also build from the real samples in ../shared/data, and `flanmix catalog` reports the coverage."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from flanmix.catalog import catalog, find_csv, summary
from flanmix.cli import main
from flanmix.registry import Registry
from flanmix.stats import mixture_stats
from flanmix.writer import read_manifest, read_shard

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hub"
SUBMIXES = {"flan2021": ("Flan2021", 0.40), "t0": ("T0", 0.32), "niv2": ("NIv2", 0.20), "cot": ("CoT", 0.05),
            "dialog": ("Dialog", 0.03)}
OPT_ONLY = ("niv2", "cot", "dialog")  # FLAN mixes these 50 zs_opt / 50 fs_opt, no no-options rows


def wrapper(tmp_path: Path, mixture: str, rows: int, *, seed: int = 0) -> Path:
    """A mixture file holding one bundled mixture at another size (how a user resizes a bundled mixture)."""
    path = tmp_path / f"{mixture}-{rows}.yaml"
    path.write_text(f"name: {mixture}-small\nseed: {seed}\nsize: {{examples: {rows}}}\ndedup: false\n"
                    f"components: [{{mixture: {mixture}}}]\n")
    return path


def build(capsys, mix: Path, out: Path, *mirrors: Path) -> None:
    argv = ["build", str(mix), "--out", str(out), "--quiet", "--num-proc", "2"]
    for mirror in mirrors:
        argv += ["--hub-mirror", str(mirror)]
    code = main(argv)
    assert code == 0, capsys.readouterr().err


def rows_of(out: Path) -> list[dict]:
    manifest = read_manifest(out)
    return [row for shard in manifest["shards"]
            for row in read_shard(out / shard["file"], manifest["build"]["format"], False).to_pylist()]


def test_flan2021_builds_from_the_fixture_mirror(tmp_path, capsys):
    build(capsys, wrapper(tmp_path, "flan2021", 3000), tmp_path / "f21", FIXTURES)
    manifest = read_manifest(tmp_path / "f21")
    tasks = {leaf["task"] for leaf in manifest["leaves"]}
    flan2021 = {t.name for t in Registry.discover() if t.spec.collection == "Flan2021"}
    assert tasks == flan2021 and len(tasks) == 71
    assert manifest["spec"]["components"][0]["mixture"] == "flan2021"
    rows = rows_of(tmp_path / "f21")
    assert len(rows) > 2900 and {r["task_source"] for r in rows} == {"Flan2021"}
    assert {r["template_type"] for r in rows} <= {"zs_opt", "zs_noopt"}  # Flan 2021: zero-shot only
    # Examples-proportional with a 3,000 cap: on the fixtures (a few rows each) every task gets the same rate.
    rates = {leaf["rate"] for leaf in manifest["leaves"]}
    assert max(rates) / min(rates) < 3


def test_flan2022_shares_and_template_splits_match_flan(tmp_path, capsys):
    out = tmp_path / "f22"
    build(capsys, wrapper(tmp_path, "flan2022", 40_000), out, FIXTURES)
    stats = mixture_stats(out)
    components = {c["name"].split("/")[-1]: c for c in stats["components"]}
    assert list(components) == list(SUBMIXES)
    rows = rows_of(out)
    members = {name: leaf_tasks(out, name) for name in SUBMIXES}
    sources = {name: {r["task_source"] for r in rows if r["task_name"] in members[name]} for name in SUBMIXES}
    for name, (collection, share) in SUBMIXES.items():
        c = components[name]
        assert c["target"] == pytest.approx(share)
        assert abs(c["realized"] - share) <= 0.01, (name, c["realized"])
        assert sources[name] == {collection}
        nominal = ({"zs_opt": 0.5, "fs_opt": 0.5, "zs_noopt": 0.0, "fs_noopt": 0.0} if name in OPT_ONLY
                   else dict.fromkeys(("zs_opt", "zs_noopt", "fs_opt", "fs_noopt"), 0.25))
        # A few-shot row left without exemplars (x_shot draws none with probability 0.9^25 for ten patterns) is
        # replaced by a row of the same task and type from another example, as FLAN's per-type datasets still yield
        # few-shot rows at their rate: the realized split is the planned one. Template-type ties are drawn per
        # task, so the planned split of these tiny tasks is not skewed towards zs_opt.
        assert c["rows"] == c["planned_rows"], name
        for tt, split in c["template_types"].items():
            assert split["target"] == pytest.approx(nominal[tt]), (name, tt)
            assert abs(split["planned"] - nominal[tt]) <= 0.005, (name, tt, split)
            assert split["realized"] == pytest.approx(split["planned"], abs=1e-9), (name, tt, split)
    assert stats["rows"]["fewshot_replaced"] > 0 and "fewshot_dropped" not in stats["rows"]
    names = {r["task_name"] for r in rows}
    assert {"cot_gsm8k", "cot_gsm8k_ii", "stream_aqua_ii", "wiki_dialog_ii", "tfds_natural_instructions",
            "rte", "anli_r1", "glue_mrpc"} <= names
    # Inversion tasks run at 0.3 x their parent's rate (sharing its cap).
    rate = {leaf["task"]: leaf["rate"] for leaf in read_manifest(out)["leaves"]}
    assert rate["cot_gsm8k_ii"] == pytest.approx(0.3 * rate["cot_gsm8k"])
    assert rate["qrecc_ii"] == pytest.approx(0.3 * rate["qrecc"])
    assert not any(r["task_name"].startswith("tfds_") and "task685" in r["example_id"] for r in rows)  # MMLU


def leaf_tasks(out: Path, component: str) -> set[str]:
    return {leaf["task"] for leaf in read_manifest(out)["leaves"] if f"/{component}/" in leaf["component"] + "/"}


# ---------------------------------------------------------------------------------------------- real samples
DBPEDIA = ["Company", "Educational Institution", "Artist", "Athlete", "Office Holder", "Mean Of Transportation",
           "Building", "Natural Place", "Village", "Animal", "Plant", "Album", "Film", "Written Work"]


def p3_rows(path: Path, name: str) -> list[dict]:
    """t0_rendered rows (prompt, completion) as P3 rows; answer choices recovered from the rendered prompt."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        prompt, target = row["prompt"], row["completion"].replace("<|endoftext|>", "")
        if name.startswith("app_reviews"):
            choices = ["★" * k for k in range(1, 6)]
        elif name.startswith("dbpedia"):  # promptsource's answer_choices for dbpedia_14
            choices = DBPEDIA
        elif name.startswith("social_i_qa"):
            choices = prompt.rsplit("Possible answers: ", 1)[1].strip().split(", ")
        else:  # qasc: one "- option" per line
            choices = [m.strip() for m in re.findall(r"^\s*- (.*)$", prompt, re.M)]
        out.append({"inputs": [0], "inputs_pretokenized": prompt, "targets": [0], "targets_pretokenized": target,
                    "answer_choices": choices})
    return out


def shared_mirror(root: Path, shared: Path) -> Path:
    """A mirror of the real samples: T0 (instruction/t0_rendered as P3), NIv2 task files, FLAN's CoT TSVs."""
    t0_tasks = {t.name for t in Registry.discover() if t.spec.collection == "T0"}
    for path in sorted((shared / "instruction" / "t0_rendered").glob("*.jsonl")):
        if path.stem in t0_tasks:
            folder = root / "bigscience__P3" / path.stem
            folder.mkdir(parents=True)
            (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in p3_rows(path, path.stem)))
    tasks = root / "allenai__natural-instructions" / "tasks"
    tasks.mkdir(parents=True)
    for path in (shared / "instruction" / "natural_instructions").glob("task*.json"):
        shutil.copy(path, tasks / path.name)  # copies: a mirror's files must lie inside it
    cot = root / "google-research__FLAN" / "flan" / "v2" / "cot_data"
    cot.mkdir(parents=True)
    for path in (shared / "instruction" / "flan_cot").glob("*_train.tsv"):
        shutil.copy(path, cot / path.name)
    return root


def test_flan2022_reads_the_real_t0_niv2_cot_samples(tmp_path, capsys, shared_data):
    real = shared_mirror(tmp_path / "real", shared_data)
    out = tmp_path / "f22real"
    build(capsys, wrapper(tmp_path, "flan2022", 8000, seed=1), out, real, FIXTURES)  # real first, fixtures fill in
    rows = rows_of(out)
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["task_name"], []).append(row)
    assert any("E. D. Abbott Ltd" in r["inputs"] for r in by_task["dbpedia_14_given_a_choice_of_categories_"])
    niv2 = by_task["tfds_natural_instructions"]
    assert {r["example_id"].split("-")[0] for r in niv2} >= {"task1388", "task827"}  # real NIv2 instances
    lines = (shared_data / "instruction/flan_cot/gsm8k_train.tsv").read_text(encoding="utf-8").split("\n")
    gsm8k = by_task["cot_gsm8k"] + by_task["cot_gsm8k_ii"]
    assert max(int(r["example_id"].rsplit(":", 1)[1]) for r in gsm8k) > 8  # the fixture has 8 rows, FLAN 7,473
    for row in gsm8k[:20]:
        question = lines[int(row["example_id"].rsplit(":", 1)[1])].split("\t")[0].replace("\\n", "\n").strip()
        assert question[:50] in row["inputs"] or row["task_name"].endswith("_ii")
    shares = {c["name"].split("/")[-1]: c["realized"] for c in mixture_stats(out)["components"]}
    for name, (_, share) in SUBMIXES.items():
        assert abs(shares[name] - share) <= 0.01, (name, shares[name])


# ---------------------------------------------------------------------------------------------- catalog
def test_catalog_reports_coverage(capsys):
    entries, extra = catalog(Registry.discover(), find_csv())
    s = summary(entries, extra)
    assert (s["Flan2021"]["covered"], s["Flan2021"]["total"]) == (71, 71)
    assert (s["T0"]["covered"], s["T0"]["total"]) == (193, 193)
    assert (s["CoT"]["covered"], s["CoT"]["total"]) == (9, 9)
    assert s["NIv2"]["total"] == 1556 and s["NIv2"]["covered"] == 1556
    assert s["Dialog"]["covered"] == 2 and set(s["Dialog"]["unverified"]) == {"wiki_dialog", "qrecc"}
    assert not any(s[c]["extra_tasks"] for c in s)
    assert main(["catalog", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["Flan2021"]["covered"] == 71
    rte = next(e for e in data["entries"] if e["name"] == "rte")
    assert rte["tasks"] == ["rte"] and rte["clusters"] == ["nli"] and rte["mapped"] and rte["templates"] == ["flan/rte"]
    assert main(["catalog", "--source", "cot"]) == 0
    text = capsys.readouterr().out
    assert "cot_gsm8k" in text and "CoT: 9/9 tasks covered" in text and "Flan2021:" not in text
    assert main(["catalog", "--source", "nope"]) == 2
    assert "unknown submix" in capsys.readouterr().err


def test_every_catalog_task_compiles_and_names_flan(capsys):
    registry = Registry.discover()
    flan = [t for t in registry if t.spec.collection in ("Flan2021", "T0", "NIv2", "CoT", "Dialog")]
    assert len(flan) == 71 + 193 + 1 + 18 + 4
    for task in flan:
        assert task.prompts is not None  # bundled tasks compile on first use: compile every one here
        assert task.spec.source.kind in ("hub", "repo") and task.spec.verified is not None, task.name
        assert isinstance(task.spec.templates, str) and task.spec.templates.startswith("flan/"), task.name
        if task.name.endswith("_ii"):
            assert task.spec.inversion_of == task.name[:-3]

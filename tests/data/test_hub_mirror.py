"""The hub mirror (`flanmix data mirror`, `flanmix build --hub-mirror`), the build's preflight, repo sources, the
spec's `filter` and `verified` keys, and the one-line errors for bad mirror data — on a small registry of our own
(hub sources read through a monkeypatched `datasets.load_dataset`: the tests never touch the network)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import datasets
import pytest

from flanmix.cli import main
from flanmix.core.errors import FlanmixError
from flanmix.hub import MIRROR_ENV, matches, using_mirror
from flanmix.spec import TaskSpec
from flanmix.writer import read_manifest

ROWS = {
    ("demo/nli", "small"): [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 2, "idx": i} for i in range(8)],
    ("demo/qa", None): [{"question": f"q{i}?", "answers": {"text": [f"a{i}"]}} for i in range(6)],
}
TEMPLATES = """\
zero_shot:
  - {input: "{{ premise }} / {{ hypothesis }}? {{ options_ }}", target: "{{ answer }}"}
  - {input: "Q: {{ premise }}", target: "{{ answer }}"}
"""


def write_registry(root: Path, *, nli_extra: str = "", nli_answer: str = "{{ ['yes', 'no'][label] }}") -> Path:
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "templates" / "pair.yaml").write_text(TEMPLATES)
    (root / "nli.yaml").write_text(textwrap.dedent(f"""\
        name: nli
        cluster: nli
        collection: Flan2021
        source: {{hub: demo/nli, config: small, split: train}}
        verified: false
        fields:
          options: "{{{{ ['yes', 'no'] }}}}"
          answer: "{nli_answer}"
        options_field: options
        templates: pair
        """) + nli_extra)
    (root / "qa.yaml").write_text(textwrap.dedent("""\
        name: qa
        cluster: cbqa
        collection: Flan2021
        source: {hub: demo/qa}
        verified: true
        fields:
          premise: "{{ question }}"
          hypothesis: "{{ question }}"
          answer: "{{ answers.text[0] }}"
        templates: pair
        """))
    (root / "mixtures").mkdir(exist_ok=True)  # a registry's mixtures/ folder holds no task specs
    (root / "mixtures" / "mix.yaml").write_text("name: mix\nsize: {examples: 200}\ndedup: false\n"
                                   "components: [{task: nli}, {task: qa}]\n")
    return root


@pytest.fixture
def fake_hub(monkeypatch):
    """`datasets.load_dataset` serving ROWS; records every call."""
    calls: list[tuple] = []

    def load_dataset(name, config=None, split=None, revision=None, **kwargs):
        calls.append((name, config, split, revision))
        if (name, config) not in ROWS:
            raise FileNotFoundError(f"Dataset {name} not found")
        return datasets.Dataset.from_list(ROWS[name, config])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def mix(reg: Path) -> str:
    return str(reg / "mixtures" / "mix.yaml")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_mirror_downloads_records_revision_and_resumes(tmp_path, fake_hub, capsys):
    reg = write_registry(tmp_path / "reg")
    mirror = tmp_path / "mirror"
    code, out, err = run(capsys, "data", "mirror", mix(reg), "--to", str(mirror), "--registry", str(reg))
    assert code == 0, err
    assert "[1/2] hub:demo/nli/small:train: downloaded (8 rows)" in err and "[2/2]" in err
    assert (mirror / "demo__nli" / "small" / "train.parquet").is_file()
    assert (mirror / "demo__qa" / "default" / "train.parquet").is_file()
    info = json.loads((mirror / "demo__nli" / "small" / "_info.json").read_text())
    assert info["splits"]["train"]["rows"] == 8 and "revision" in info and info["dataset"] == "demo/nli"
    assert len(fake_hub) == 2
    code, out, err = run(capsys, "data", "mirror", mix(reg), "--to", str(mirror), "--registry", str(reg))
    assert code == 0 and len(fake_hub) == 2 and "2 already there" in out  # nothing downloaded again
    # The mirror builds offline, with the same rows the hub gives.
    code, out, err = run(capsys, "build", mix(reg), "--out", str(tmp_path / "built"), "--registry",
                         str(reg), "--hub-mirror", str(mirror), "--quiet", "--format", "jsonl")
    assert code == 0, err
    rows = [json.loads(line) for p in sorted((tmp_path / "built").glob("*.jsonl")) for line in p.open()]
    assert len(rows) == 200 and {r["task_name"] for r in rows} == {"nli", "qa"}
    assert {r["task_source"] for r in rows} == {"Flan2021"}
    assert os.environ.get(MIRROR_ENV) is None  # restored after the command


def test_mirror_failure_names_the_source_and_keeps_what_finished(tmp_path, fake_hub, capsys):
    reg = write_registry(tmp_path / "reg")
    (reg / "gone.yaml").write_text("name: gone\ncluster: x\nsource: {hub: demo/gone}\ntemplates: pair\n"
                                   "fields: {premise: '{{ a }}', hypothesis: '{{ a }}', answer: '{{ a }}'}\n")
    (reg / "mixtures" / "mix.yaml").write_text("size: 10\ncomponents: [{task: nli}, {task: gone}]\n")
    mirror = tmp_path / "mirror"
    code, out, err = run(capsys, "data", "mirror", mix(reg), "--to", str(mirror), "--registry", str(reg))
    progress, error = err.strip().split("\n")  # one progress line per source done, then one error line
    assert code == 2 and progress.startswith("[1/2]") and error.startswith("flanmix: error:")
    assert "cannot mirror hub:demo/gone:train" in err and "1 of 2 sources done; rerun to resume" in err
    assert (mirror / "demo__nli" / "small" / "train.parquet").is_file()
    assert not list(mirror.rglob("*.tmp*"))  # no half-written file


def test_build_preflight_without_mirror_or_network_lists_sources(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reg = write_registry(tmp_path / "reg")
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "build", mix(reg), "--out", str(out_dir), "--registry", str(reg))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "2 of 2 sources unreachable (no hub mirror, no network)" in err
    assert "nli (hub:demo/nli/small:train)" in err and "qa (hub:demo/qa:train)" in err
    assert "flanmix data mirror" in err and not out_dir.exists()


def write_mirror(root: Path, *, drop: tuple = (), nli_rows: list[dict] | None = None) -> Path:
    for (name, config), rows in ROWS.items():
        if name in drop:
            continue
        folder = root / name.replace("/", "__") / (config or "default")
        folder.mkdir(parents=True, exist_ok=True)
        rows = nli_rows if name == "demo/nli" and nli_rows is not None else rows
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.parametrize("case, expect", [
    ("missing file", ["1 of 2 sources not in the hub mirror", "qa (hub:demo/qa:train)"]),
    ("missing column", ["task 'nli' (source hub:demo/nli/small:train): column 'label' is not in the data",
                        "fields.answer"]),
    ("failing filter", ["task 'nli' (source hub:demo/nli/small:train): filter failed on row", "filter: ",
                        "division by zero"]),
])
def test_bad_mirror_data_is_one_line_and_writes_nothing(tmp_path, capsys, case, expect):
    extra = "filter: 'idx / (idx - 3) > -100'\n" if case == "failing filter" else ""
    reg = write_registry(tmp_path / "reg", nli_extra=extra)
    nli_rows = [{k: v for k, v in r.items() if k != "label"} for r in ROWS["demo/nli", "small"]]
    mirror = write_mirror(tmp_path / "mirror", drop=("demo/qa",) if case == "missing file" else (),
                          nli_rows=nli_rows if case == "missing column" else None)
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "build", mix(reg), "--out", str(out_dir), "--registry", str(reg),
                         "--hub-mirror", str(mirror), "--quiet")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for part in expect:
        assert part in err, err
    assert not out_dir.exists() and not list(tmp_path.glob("out*"))


def test_filter_drops_rows_and_sees_raw_columns(tmp_path):
    from flanmix.registry import Registry

    reg = write_registry(tmp_path / "reg", nli_extra="filter: label == 0\n")
    mirror = write_mirror(tmp_path / "mirror")
    with using_mirror([mirror]):
        task = Registry.discover([reg], bundled=False, env=False, python=False).get("nli")
        rows = task.examples("train") + task.examples("validation")
    assert len(rows) == 4 and all(e.raw["label"] == 0 for e in rows)


def test_verified_and_filter_keys_validate():
    base = {"name": "x", "cluster": "c", "templates": "flan/rte"}
    assert TaskSpec(**base, source={"hub": "a/b"}, verified=True).verified is True
    assert TaskSpec(**base, source={"hub": "a/b"}).verified is None
    with pytest.raises(ValueError, match="verified applies to hub and repo sources"):
        TaskSpec(**base, source={"builtin": "arithmetic.add"}, verified=False)
    from flanmix.task import compile_filter

    with pytest.raises(FlanmixError, match="one Jinja expression"):
        compile_filter("{{ a }} and {{ b }}")
    assert compile_filter("a > 1")({"a": 2}) is True and compile_filter("{{ a > 1 }}")({"a": 0}) is False


def test_repo_source_reads_from_mirror_and_mirrors_from_a_checkout(tmp_path, capsys, monkeypatch):
    checkout = tmp_path / "FLAN"
    (checkout / "flan" / "v2" / "cot_data").mkdir(parents=True)
    (checkout / "flan" / "v2" / "cot_data" / "toy_train.tsv").write_text(
        "What is 2+2?\\nthink\t4\t2 and 2 make 4.\nWhat is 3+3?\t6\t3 and 3 make 6.\n")
    reg = tmp_path / "reg"
    reg.mkdir()
    (reg / "toy.yaml").write_text(textwrap.dedent("""\
        name: cot_toy
        cluster: cot
        collection: CoT
        source: {repo: google-research/FLAN, files: flan/v2/cot_data/toy_*.tsv, format: flan_cot_tsv,
                 revision: e9e4ec6e2701}
        verified: true
        fields: {chain_of_thought: "{{ rationale }}"}
        templates: flan/cot_gsm8k
        """))
    (reg / "mixtures").mkdir()
    (reg / "mixtures" / "mix.yaml").write_text("size: 20\ndedup: false\ncomponents: [{task: cot_toy}]\n")
    mirror = tmp_path / "mirror"
    code, _, err = run(capsys, "data", "mirror", mix(reg), "--to", str(mirror), "--registry", str(reg),
                       "--checkout", f"google-research/FLAN={checkout}")
    assert code == 0, err
    copied = mirror / "google-research__FLAN" / "flan" / "v2" / "cot_data" / "toy_train.tsv"
    assert copied.read_bytes() == (checkout / "flan/v2/cot_data/toy_train.tsv").read_bytes()
    assert json.loads((copied.parents[3] / "_info.json").read_text())["revision"] == "e9e4ec6e2701"
    code, _, err = run(capsys, "build", mix(reg), "--out", str(tmp_path / "o"), "--registry",
                       str(reg), "--hub-mirror", str(mirror), "--quiet")
    assert code == 0, err
    assert read_manifest(tmp_path / "o")["size"]["rows"] == 20
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(capsys, "build", mix(reg), "--out", str(tmp_path / "o2"), "--registry",
                       str(reg))
    assert code == 2 and "cot_toy (repo:google-research/FLAN:flan/v2/cot_data/toy_*.tsv)" in err


def test_repo_listing_from_github_is_matched_segment_by_segment(tmp_path, monkeypatch):
    import flanmix.hub as hub
    from flanmix.spec import SourceSpec

    tree = {"tree": [{"path": "tasks/task001_a.json", "type": "blob"}, {"path": "tasks/sub/task002.json",
                                                                          "type": "blob"},
                     {"path": "tasks", "type": "tree"}, {"path": "README.md", "type": "blob"}]}
    fetched: list[str] = []

    def fetch(url, timeout=60.0):
        fetched.append(url)
        return json.dumps(tree).encode() if "api.github.com" in url else b'{"Instances": []}'

    monkeypatch.setattr(hub, "fetch_url", fetch)
    source = SourceSpec(repo="allenai/natural-instructions", files="tasks/task*.json", format="niv2", revision="abc")
    state, n = hub.mirror_repo(source, tmp_path)
    assert (state, n) == ("downloaded", 1)
    assert fetched[1] == "https://raw.githubusercontent.com/allenai/natural-instructions/abc/tasks/task001_a.json"
    assert (tmp_path / "allenai__natural-instructions" / "tasks" / "task001_a.json").is_file()
    assert matches("tasks/task001_a.json", "tasks/*.json") and not matches("tasks/sub/x.json", "tasks/*.json")


def test_mirror_folder_must_exist(tmp_path):
    with pytest.raises(FlanmixError, match="hub mirror folder not found"):
        with using_mirror([tmp_path / "nope"]):
            pass

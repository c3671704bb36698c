"""Building mixtures: output layout, determinism across --num-proc, parts + merge, dedup/decontamination, sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flanmix.core.errors import FlanmixError
from flanmix.mixture import build, merge
from flanmix.writer import read_manifest
from helpers import make_registry

SPEC = {
    "seed": 5, "size": {"examples": 2400}, "rate": {"by": "examples", "cap": 400}, "cot": 0.4, "inversion": 0.3,
    "randomize_options": True,
    "components": [{"cluster": "alpha", "weight": 0.5},
                   {"mixture": {"components": [{"tasks": ["t1", "t3"]}, {"task": "t5"}],
                                "template_types": {"zs_noopt": 1, "fs_noopt": 1}}, "weight": 0.5}],
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return make_registry(tmp_path_factory.mktemp("reg"))


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _build(registry, out: Path, spec=SPEC, **kw):
    kw.setdefault("rows_per_shard", 500)
    return build(spec, out, registry=registry, progress=False, **kw)


def test_output_layout_and_manifest(registry, tmp_path):
    import datasets

    manifest = _build(registry, tmp_path / "out")
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out"), split="train")
    assert ds.column_names == ["inputs", "targets", "task_name", "task_source", "template_type", "template_idx",
                               "example_id", "cot"]
    assert len(ds) == manifest.rows == manifest["size"]["planned"] - manifest["size"]["dedup_dropped"]
    assert manifest["size"]["planned"] == 2400 and len(manifest["shards"]) == 5
    for shard in manifest["shards"]:
        assert pq.read_metadata(tmp_path / "out" / shard["file"]).num_rows == shard["rows"]
    for key in ("spec", "seed", "targets", "lengths", "inputs", "flanmix_version", "spec_hash"):
        assert key in manifest
    assert manifest["inputs"]["spec_files"] and manifest["inputs"]["data_files"]
    realized = sum(t["realized"] for t in manifest["targets"])
    assert realized == manifest.rows
    assert sum(t["target_rate"] for t in manifest["targets"]) == pytest.approx(1.0)
    # planned counts follow the target rates exactly (largest remainder)
    for t in manifest["targets"]:
        assert abs(t["planned"] - t["target_rate"] * 2400) <= 3
    assert manifest["lengths"]["inputs_chars"]["mean"] > 0
    assert not list(tmp_path.glob("out.tmp-*"))


def test_refuses_existing_dir_unless_overwrite(registry, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FlanmixError, match="already exists"):
        _build(registry, tmp_path / "out")
    _build(registry, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_byte_identical_whatever_num_proc(registry, tmp_path):
    _build(registry, tmp_path / "a", num_proc=1)
    _build(registry, tmp_path / "b", num_proc=2)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    _build(registry, tmp_path / "c", num_proc=1, seed=6)
    assert _files(tmp_path / "a")["train-00000.parquet"] != _files(tmp_path / "c")["train-00000.parquet"]


def test_a_build_leaves_the_process_as_it_found_it(registry, tmp_path):
    import gc

    import datasets

    from flanmix.sources import iter_source
    from flanmix.spec import SourceSpec

    assert gc.get_freeze_count() == 0
    _build(registry, tmp_path / "a", num_proc=2)
    assert gc.get_freeze_count() == 0  # the build froze the loaded tasks while rendering, and thawed them
    gc.freeze()  # objects the caller froze stay frozen (some may die meanwhile), and nothing more is frozen
    try:
        frozen = gc.get_freeze_count()
        _build(registry, tmp_path / "b", num_proc=2)
        assert frozen * 0.9 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
    # Reading data files through `datasets` silences its progress bars only while reading.
    (tmp_path / "rows.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    assert not datasets.are_progress_bars_disabled()
    rows = list(iter_source(SourceSpec(files="rows.jsonl"), task_name="t", base_dir=tmp_path))
    assert [row for _, row in rows] == [{"a": 1}, {"a": 2}]
    assert not datasets.are_progress_bars_disabled()


def test_parts_merge_to_the_single_build(registry, tmp_path):
    spec = dict(SPEC, replacement=True)  # with replacement: plenty of cross-part duplicates for merge to drop
    single = _build(registry, tmp_path / "single", spec=spec)
    parts = [tmp_path / f"part{i}" for i in range(3)]
    for i, part in enumerate(parts):
        _build(registry, part, spec=spec, num_shards=3, shard_index=i, num_proc=2 if i == 1 else 1)
    assert single["size"]["dedup_dropped"] > 0
    merged = merge([parts[2], parts[0], parts[1]], tmp_path / "merged", progress=False)
    assert _files(tmp_path / "single") == _files(tmp_path / "merged")
    assert merged.rows == single.rows
    # merge checks its parts
    with pytest.raises(FlanmixError, match=r"missing part\(s\) \[1\]"):
        merge([parts[0], parts[2]], tmp_path / "m2", progress=False)
    with pytest.raises(FlanmixError, match="given twice"):
        merge([parts[0], parts[0], parts[1], parts[2]], tmp_path / "m3", progress=False)
    other = _build(registry, tmp_path / "other", spec=spec, seed=9, num_shards=3, shard_index=1)
    with pytest.raises(FlanmixError, match="different spec or seed"):
        merge([parts[0], tmp_path / "other", parts[2]], tmp_path / "m4", progress=False)
    with pytest.raises(FlanmixError, match="not a part"):
        merge([tmp_path / "single"], tmp_path / "m5", progress=False)
    assert other.rows > 0 and not (tmp_path / "m2").exists()


def test_dedup_and_decontamination_are_counted(registry, tmp_path):
    spec = dict(SPEC, replacement=True, dedup=True)
    deduped = _build(registry, tmp_path / "d", spec=spec)
    assert deduped["size"]["dedup_dropped"] > 0
    table = pq.read_table(sorted((tmp_path / "d").glob("train-*.parquet"))).to_pydict()
    keys = [(" ".join(i.lower().split()), " ".join(t.lower().split())) for i, t in zip(table["inputs"],
                                                                                       table["targets"])]
    assert len(set(keys)) == len(keys)
    kept = _build(registry, tmp_path / "k", spec=dict(spec, dedup=False))
    assert kept.rows == 2400 and kept["size"]["dedup_dropped"] == 0
    # Decontaminate against a file holding some training rows' text, and against a task's validation rows.
    evals = tmp_path / "eval.jsonl"
    sample = [{"q": i, "a": t} for i, t in zip(table["inputs"][:5], table["targets"][:5])]
    evals.write_text("\n".join(json.dumps(s) for s in sample) + "\n")
    dec = _build(registry, tmp_path / "x", spec=dict(spec, decontaminate={"files": [str(evals)], "ngram": 3}))
    assert dec["size"]["decontaminated"] > 0 and str(evals) in dec["inputs"]["data_files"]
    dec = _build(registry, tmp_path / "y", spec=dict(spec, decontaminate={"tasks": ["t4"], "ngram": 1}))
    assert 0 < dec["size"]["decontaminated"] < 2400  # 1-grams: rows sharing a word such as "plus"


def test_jsonl_and_messages(registry, tmp_path):
    manifest = _build(registry, tmp_path / "j", fmt="jsonl", messages=True)
    rows = [json.loads(line) for p in sorted((tmp_path / "j").glob("train-*.jsonl")) for line in p.open()]
    assert len(rows) == manifest.rows
    assert rows[0]["messages"] == [{"role": "user", "content": rows[0]["inputs"]},
                                   {"role": "assistant", "content": rows[0]["targets"]}]


def test_epoch_and_token_sizes(registry, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    epoch = _build(registry, tmp_path / "e", spec=dict(SPEC, size="epoch", dedup=False))
    assert epoch["size"]["planned"] > 0
    by_task: dict[str, int] = {}
    for t in epoch["targets"]:
        by_task[t["task"]] = by_task.get(t["task"], 0) + t["planned"]
    train = {t.name: len(t.examples("train")) for t in registry}
    assert all(by_task[n] <= train[n] for n in by_task)
    assert any(by_task[n] >= train[n] - 1 for n in by_task)  # the first component ran out
    vocab = {"[UNK]": 0}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    spec = dict(SPEC, size={"tokens": 50_000, "tokenizer": str(tmp_path / "tokenizer.json")}, dedup=False)
    tokens = _build(registry, tmp_path / "t", spec=spec)
    total = tokens["lengths"]["inputs_tokens"]["total"] + tokens["lengths"]["targets_tokens"]["total"]
    assert 45_000 < total < 55_000
    from flanmix.stats import mixture_stats

    recount = mixture_stats(tmp_path / "t", tokenizer=str(tmp_path / "tokenizer.json"))["lengths"]
    assert recount["inputs_tokens"] == tokens["lengths"]["inputs_tokens"]


def test_stats_and_plot(registry, tmp_path):
    from flanmix.stats import format_report, mixture_stats

    _build(registry, tmp_path / "s")
    stats = mixture_stats(tmp_path / "s")
    comps = {c["name"]: c for c in stats["proportions"]["component"]}
    assert comps["cluster:alpha"]["target"] == pytest.approx(0.5)
    assert abs(comps["cluster:alpha"]["realized"] - 0.5) < 0.02
    assert "TEMPLATE_TYPE" in format_report(stats)
    proc = subprocess.run([sys.executable, "-m", "flanmix", "stats", str(tmp_path / "s"), "--plot",
                           str(tmp_path / "p.png")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_bundled_demo_builds_from_the_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flanmix", "build", "demo", "--out", str(tmp_path / "demo"),
                           "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    manifest = read_manifest(tmp_path / "demo")
    assert 19_000 < manifest["size"]["rows"] <= 20_000
    proc = subprocess.run([sys.executable, "-m", "flanmix", "build", "demo", "--out", str(tmp_path / "demo")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "already exists" in proc.stderr and "Traceback" not in proc.stderr


def test_flan2022_shape_over_imported_shared_data(shared_data, tmp_path, monkeypatch):
    from flanmix.importers import import_shared
    from flanmix.mixture import find_mixture, load_spec
    from flanmix.registry import Registry
    from flanmix.stats import mixture_stats

    spec, _ = load_spec(find_mixture("flan2022-shape"))
    with pytest.raises(FlanmixError, match=r"no task matches 't0\.\*'"):
        build(spec, tmp_path / "no", registry=Registry.discover(), progress=False)
    import_shared(shared_data, tmp_path / "imports")
    monkeypatch.setenv("FLANMIX_ALLOW_PATHS", str(shared_data))  # the imported specs read the shared data
    registry = Registry.discover([tmp_path / "imports"])
    small = spec.model_copy(update={"size": spec.size.model_copy(update={"examples": 4000})})
    build(small, tmp_path / "f22", registry=registry, progress=False, num_proc=2, rows_per_shard=1000)
    shares = {c["name"].split("/")[0]: c for c in mixture_stats(tmp_path / "f22")["proportions"]["component"]}
    expected = {"flan2021": 0.40, "t0": 0.32, "niv2": 0.20, "cot": 0.05, "dialog": 0.03}
    for name, share in expected.items():
        assert shares[name]["target"] == pytest.approx(share)
        assert shares[name]["realized"] == pytest.approx(share, abs=0.01)
    manifest = read_manifest(tmp_path / "f22")
    for leaf in manifest["leaves"]:
        assert leaf["template_types"] == {"zs_opt": 0.25, "zs_noopt": 0.25, "fs_opt": 0.25, "fs_noopt": 0.25}
    assert [c["label"] for c in manifest["tree"]["components"]] == list(expected)
    assert manifest["spec"]["components"][2]["mixture"]["rate"]["cap"] == 5000

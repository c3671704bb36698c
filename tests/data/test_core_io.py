"""flanmix.core's readers and writers: atomic files and folders, JSON/JSONL with line numbers, glob expansion."""

from __future__ import annotations

import gzip
import json

import pytest

from flanmix.core.atomic import atomic_dir, atomic_open, write_json, write_jsonl
from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import iter_jsonl, read_json, read_jsonl
from flanmix.core.paths import expand_globs


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("half")
            raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary left behind


def test_write_jsonl_keeps_unicode_and_counts(tmp_path):
    n = write_jsonl(tmp_path / "rows.jsonl", [{"t": "café"}, {"t": "😀"}])
    assert n == 2
    assert (tmp_path / "rows.jsonl").read_text(encoding="utf-8") == '{"t": "café"}\n{"t": "😀"}\n'


def test_atomic_dir_keeps_the_old_folder_on_failure(tmp_path):
    out = tmp_path / "build"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(ValueError):
        with atomic_dir(out, replace=True) as tmp:
            (tmp / "a.txt").write_text("second")
            raise ValueError("render failed")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_atomic_dir_restores_the_old_folder_if_the_swap_fails(tmp_path, monkeypatch):
    import flanmix.core.atomic as atomic

    out = tmp_path / "build"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    real_replace = atomic.os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder's rename into place
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", flaky_replace)
    with pytest.raises(OSError):
        with atomic_dir(out, replace=True) as tmp:
            (tmp / "a.txt").write_text("second")
    assert (out / "a.txt").read_text() == "first"


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n', encoding="utf-8")
    with pytest.raises(FlanmixError, match=r"rows\.jsonl:3: invalid JSON"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(FlanmixError, match=r"rows\.jsonl:2: each line must be a JSON object"):
        read_jsonl(path)
    assert read_jsonl(path, objects=False) == [{"a": 1}, [1, 2]]


def test_jsonl_reads_gzip_and_reports_non_utf8(tmp_path):
    gz = tmp_path / "rows.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write('{"a": 1}\n{"a": 2}\n')
    assert [n for n, _ in iter_jsonl(gz)] == [1, 2]
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"a": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(FlanmixError, match=r"latin1\.jsonl:1: not UTF-8"):  # the line of the bad byte
        read_jsonl(bad)
    with pytest.raises(FlanmixError, match=r"missing\.jsonl: file not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_read_json_names_what_and_line(tmp_path):
    path = tmp_path / "task.json"
    path.write_text('{\n  "examples": [1,\n}\n', encoding="utf-8")
    with pytest.raises(FlanmixError, match=r"task\.json:3: cannot read BBH file: invalid JSON"):
        read_json(path, what="BBH file")


def test_expand_globs_orders_and_reports_the_field(tmp_path):
    for name in ("b.txt", "a.txt", "c.csv"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in expand_globs(["*.txt", "c.csv"], tmp_path, field="files")] == ["a.txt", "b.txt", "c.csv"]
    with pytest.raises(FlanmixError, match=r"spec\.yaml: source\.files: no data file matches '\*\.json'"):
        expand_globs(["*.json"], tmp_path, field="source.files", what="data file", file="spec.yaml")

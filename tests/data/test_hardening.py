"""The boundaries of issue 17, tested in process: bounded YAML, linear line lookup, "did you mean" for typos, task
specs confined to their registry folder and a closed set of generators, locked output folders that are never
silently replaced, stale temporaries removed, data-file errors at the data file's own line.

The same boundaries are probed through the command line, in subprocesses under a memory cap, in tests/hostile/.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flanmix.core.atomic import atomic_dir, check_writable, lock_path, locked, remove_stale
from flanmix.core.errors import FlanmixError
from flanmix.core.paths import ALLOW_PATHS_ENV, allowing, confine
from flanmix.core.yamlio import MAX_ALIAS_NODES, YamlDoc, load_yaml
from flanmix.registry import load_task_file
from flanmix.sources import register_generator, resolve_generator
from flanmix.spec import SourceSpec, TaskSpec
from flanmix.writer import read_manifest

# ------------------------------------------------------------------------------------------------ YAML


def test_line_of_is_linear_in_the_number_of_keys():
    n = 50_000
    text = "".join(f"k{i}: {i}\n" for i in range(n))
    start = time.perf_counter()
    doc = YamlDoc("big.yaml", text)
    lines = [doc.line_of([f"k{i}"]) for i in range(n)]
    assert time.perf_counter() - start < 5  # was minutes: every lookup scanned every key
    assert lines[0] == 1 and lines[-1] == n


def test_anchors_within_bounds_load_and_keep_line_numbers():
    doc = YamlDoc("a.yaml", "base: &b {lr: 1, steps: 2}\nrun:\n  <<: *b\n  steps: 3\nother: *b\n")
    assert doc.data == {"base": {"lr": 1, "steps": 2}, "run": {"lr": 1, "steps": 3}, "other": {"lr": 1, "steps": 2}}
    assert doc.line_of(["run", "steps"]) == 4 and doc.line_of(["other"]) == 1  # an alias is its anchor's node


def test_alias_bomb_is_refused_before_it_expands():
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]  # 10^12 strings
    start = time.perf_counter()
    with pytest.raises(FlanmixError, match=r"bomb\.yaml:\d+: YAML aliases expand the document to more than 10\^12"):
        load_yaml("\n".join(lines), path="bomb.yaml")
    assert time.perf_counter() - start < 1
    # Just past the bound is refused too; aliases adding fewer nodes than the bound are fine.
    many = MAX_ALIAS_NODES // 10 + 10
    with pytest.raises(FlanmixError, match="YAML aliases expand"):
        load_yaml('a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]\nb: [' + ", ".join(["*a"] * many) + "]")
    assert len(load_yaml('a: &a [1, 2]\nb: [' + ", ".join(["*a"] * 1000) + "]")["b"]) == 1000


def test_recursive_alias_is_refused():
    with pytest.raises(FlanmixError, match=r"r\.yaml:1: YAML alias refers to a node that contains it"):
        load_yaml("a: &a [1, *a]\n", path="r.yaml")


@pytest.mark.parametrize("text, line", [("a: 1\nb: x\0y\n", 2), ("a: café ünï\n\nb: 😀\0\n", 3),
                                        ("a: 1\nb: 2\nc: \x07\n", 3)])
def test_control_characters_are_reported_by_line(text, line):
    with pytest.raises(FlanmixError, match=rf"n\.yaml:{line}: malformed YAML: control characters are not allowed"):
        load_yaml(text, path="n.yaml")


def test_misspelled_key_suggests_the_known_one(tmp_path):
    spec = tmp_path / "t.yaml"
    text = "name: t\ncluster: c\nsource: {builtin: arithmetic.add}\ntemplates: {zero_shot: [{input: x, target: y}]}\n"
    spec.write_text(text.replace("cluster", "clustr"))
    with pytest.raises(FlanmixError) as info:
        load_task_file(spec)
    # pydantic also reports `cluster` as missing: the same problem, so not counted as another one.
    assert str(info.value) == f"{spec}:2: clustr: unknown key; did you mean cluster?"
    spec.write_text(text.replace("arithmetic.add}", "arithmetic.add, exampels: 3}"))
    with pytest.raises(FlanmixError, match=r"t\.yaml:3: source\.exampels: unknown key; did you mean examples\?$"):
        load_task_file(spec)
    spec.write_text(text.replace("arithmetic.add}", "arithmetic.add, zzzzzz: 3}").replace("cluster", "clustr"))
    with pytest.raises(FlanmixError, match=r"t\.yaml:3: source\.zzzzzz: unknown key \(\+2 more problems\)$"):
        load_task_file(spec)


def test_non_finite_numbers_are_refused():
    with pytest.raises(Exception, match="finite"):
        TaskSpec.model_validate({"name": "t", "cluster": "c", "source": {"builtin": "arithmetic.add"},
                                 "templates": {"zero_shot": []}, "validation_fraction": float("inf")})


# ------------------------------------------------------------------------------------------------ task specs


def test_generators_come_from_a_closed_set(monkeypatch):
    assert resolve_generator("arithmetic.add").__name__ == "add"
    for name in ("sys:exit", "code:interact", "os.system", "steering.re", "arithmetic._private", "builtins:eval",
                 "classification.NEGATIVE", "../arithmetic.add"):
        with pytest.raises(FlanmixError, match="unknown generator"):
            resolve_generator(name)
    register_generator("hardening.mine", lambda rng: {"a": 1})
    assert resolve_generator("hardening.mine")(None) == {"a": 1}
    # An installed package may declare generators under the `flanmix.generators` entry point group.
    point = importlib.metadata.EntryPoint("plugin_rows", "flanmix.builtin.arithmetic:add", "flanmix.generators")
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [point] if kw.get("group") == "flanmix.generators" else real(**kw))
    assert resolve_generator("plugin_rows").__name__ == "add"


def _rows(task) -> int:
    return len(task.examples("train")) + len(task.examples("validation"))


def _files_task(root: Path, files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    spec = root / "t.yaml"
    spec.write_text(f"name: t\ncluster: c\nsource: {{files: {files!r}}}\ntemplates:\n  zero_shot:\n"
                    "    - {input: '{{ a }}', target: x}\n")
    return spec


def test_file_sources_stay_in_the_registry_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_PATHS_ENV, raising=False)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "rows.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    reg = tmp_path / "reg"
    (reg / "sub").mkdir(parents=True)
    (reg / "inside.jsonl").write_text('{"a": 3}\n')
    # A spec in a subfolder may read the registry folder's data; nothing outside it.
    spec = _files_task(reg / "sub", "../inside.jsonl")
    assert _rows(load_task_file(spec, registry_root=reg)) == 1
    with pytest.raises(FlanmixError, match="outside the task's registry folder"):
        load_task_file(spec).examples()  # without a registry, the spec's own folder is the root
    for pattern in ("../shared/rows.jsonl", str(shared / "*.jsonl"), "link.jsonl"):
        (reg / "link.jsonl").unlink(missing_ok=True)
        (reg / "link.jsonl").symlink_to(shared / "rows.jsonl")
        spec = _files_task(reg, pattern)
        with pytest.raises(FlanmixError, match="outside the task's registry folder"):
            load_task_file(spec, registry_root=reg).examples()
        with allowing([shared]):  # what `--allow-path DIR` does for one command
            assert os.environ[ALLOW_PATHS_ENV] == str(shared.resolve())
            assert _rows(load_task_file(spec, registry_root=reg)) == 2
        assert ALLOW_PATHS_ENV not in os.environ
    # A glob that searches a folder outside (here the registry's parent) is refused even when its matches would be
    # allowed: the folder it lists is not.
    with allowing([shared]), pytest.raises(FlanmixError, match="data file folder .* is outside"):
        load_task_file(_files_task(reg, "../*/rows.jsonl"), registry_root=reg).examples()


def test_confine_resolves_symlink_loops_to_one_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(FlanmixError, match="symlink loop"):
        confine([tmp_path / "a"], tmp_path, file="spec.yaml", field="source.files")


def test_bad_data_line_is_reported_at_the_data_files_line(tmp_path):
    from flanmix.sources import iter_source

    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"a": {i}}}\n' if i != 50 else "{bad\n" for i in range(60)))
    with pytest.raises(FlanmixError) as info:
        list(iter_source(SourceSpec(files="d.jsonl"), task_name="t", base_dir=tmp_path, root=tmp_path))
    assert str(info.value).startswith(f"{data}:51: invalid JSON")
    # A location added later (the mixture's line) is no line of the data file.
    assert info.value.with_context(file="mix.yaml", line=4).line == 51
    unlocated = FlanmixError("cannot read", file=data)
    assert unlocated.with_context(file="mix.yaml", line=4).line is None


# ------------------------------------------------------------------------------------------------ outputs


def test_a_locked_output_refuses_a_second_writer(tmp_path):
    out = tmp_path / "out"
    with locked(out):
        assert lock_path(out).exists()
        with pytest.raises(FlanmixError, match="another process is writing"):
            with atomic_dir(out):
                pass
    assert not lock_path(out).exists() and not out.exists()


def test_finalize_never_replaces_a_folder_that_appeared(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FlanmixError, match="appeared while this one was being written"):
        with atomic_dir(out) as tmp:
            (tmp / "mine.txt").write_text("mine")
            out.mkdir()  # another writer, not using the lock, finished first
            (out / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic_dir(out, replace=True) as tmp:  # --overwrite
        (tmp / "mine.txt").write_text("mine")
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    out = tmp_path / "out"
    (tmp_path / f"out.tmp-{dead}").mkdir()
    (tmp_path / f"out.tmp-{os.getpid() + 10**7}").mkdir()  # no such PID either
    (tmp_path / f"out.tmp-{os.getppid()}").mkdir()  # a live process: left alone
    (tmp_path / f"out.old-{dead}").mkdir()  # died mid-swap with out missing: the old output comes back
    (tmp_path / f"out.old-{dead}" / "manifest.json").write_text("{}")
    notes: list[str] = []
    removed = remove_stale(out, note=notes.append)
    assert sorted(p.name for p in removed) == sorted([f"out.tmp-{dead}", f"out.tmp-{os.getpid() + 10**7}"])
    assert (out / "manifest.json").is_file() and (tmp_path / f"out.tmp-{os.getppid()}").is_dir()
    assert len(notes) == 3 and all("no longer running" in n for n in notes)


def test_check_writable_fails_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FlanmixError, match="cannot write here: Not a directory"):
        check_writable(tmp_path / "file" / "out.jsonl", field="--out")
    with pytest.raises(FlanmixError, match="is a folder"):
        check_writable(tmp_path, field="--out")
    assert check_writable(tmp_path / "new" / "deeper" / "out.jsonl") and not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_manifest_shape_is_checked_before_use(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"spec_hash": "x", "seed": 0, "shards": {}}))
    with pytest.raises(FlanmixError, match=r"manifest\.json: spec: required field is missing \(\+\d+ more"):
        read_manifest(tmp_path)


# ------------------------------------------------------------------------------------------------ template limits


@pytest.mark.parametrize("source, message", [
    ("{{ 'a' * 10**9 }}", "'*' would build 1,000,000,000"),
    ("{{ [0] * 10**8 }}", "'*' would build 100,000,000"),
    ("{{ 'a' | center(10**9) }}", "center would build"),
    ("{{ 'a'.rjust(10**9) }}", "str.rjust would build"),
    ("{{ '{:>999999999}'.format(1) }}", "str.format would build"),
    ("{{ '%0999999999d' % 1 }}", "'%' would build"),
    ("{{ '%099999999d' | format(1) }}", "format would build"),
    ("{{ (9 ** 999999999) % 7 }}", "more than 100,000 digits"),
    ("{{ lipsum(n=100000) }}", "lipsum would build"),
    ("{{ 'ab' | replace('', 'x' * 5000000) }}", "replace would build"),
    ("{{ 'x'.join(['y' * 1000000] * 100) }}", "str.join would build"),
    ("{{ (['y' * 1000000] * 100) | join }}", "join would build"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
     "'~' would build"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
     "'+' would build"),
])
def test_template_bombs_are_refused_before_they_allocate(source, message):
    from flanmix.templates import compile_template

    start = time.perf_counter()
    with pytest.raises(FlanmixError, match=rf"^t\.yaml:3: input: .*{re.escape(message)}"):
        compile_template(source, field="input", file="t.yaml", line=3)({}, None)
    assert time.perf_counter() - start < 2


def test_template_loops_stop_at_the_time_limit_and_outputs_at_the_size_limit():
    from flanmix.sandbox import LimitedSandbox, Limits

    env = LimitedSandbox(limits=Limits(max_chars=1000, max_seconds=0.3))
    start = time.perf_counter()
    with pytest.raises(FlanmixError, match=r"took longer than 0\.3 s"):
        env.from_string("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}").render()
    assert time.perf_counter() - start < 2
    with pytest.raises(FlanmixError, match="the rendered text would build 1,00"):
        env.from_string("{% for i in range(2000) %}x{% endfor %}").render()
    assert env.from_string("{% for i in range(3) %}{{ i ~ '-' }}{% endfor %}{{ 'ab' * 2 }}").render() == "0-1-2-abab"


def test_substituted_data_is_bounded_too():
    import flanmix.templates as templates

    render = templates.compile_template("Q: {{ text }}", field="input", file="t.yaml", line=1)
    assert render({"text": "hi"}) == "Q: hi"
    with pytest.raises(FlanmixError, match="the rendered text would build 10,000,004"):
        render({"text": "x" * 10_000_001})

"""The hostile-input suite: every bad input a fair but hostile user might try, run through the real command line in
a subprocess under a memory cap and a timeout, so a regression (a bomb that expands, a hang) fails this suite
instead of taking the machine.

Each case asserts: exit code 2, exactly one line on stderr naming the problem, no traceback, and nothing left
behind (no output, no temporary folder, no lock file). See docs/security.md for the boundaries these cases probe.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MEMORY_CAP = 2 << 30  # bytes of address space per case: a bomb that expands hits this, not the machine
TIMEOUT = 60  # seconds per case: a hang fails the case

SPEC = textwrap.dedent("""\
    name: {name}
    cluster: hostile
    source: {source}
    templates:
      zero_shot:
        - {{input: "{template}", target: "x"}}
    """)


def spec(name: str = "h", source: str = "{builtin: arithmetic.add, examples: 5}",
         template: str = "{{ a }}") -> str:
    """A small task spec with one template."""
    return SPEC.format(name=name, source=source, template=template)


def bomb(levels: int = 9, top: str = "fields") -> str:
    """A "billion laughs" YAML fragment: `levels` anchors of nine aliases each (9^levels strings)."""
    lines = [f"{top}:", '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def rows(n: int, bad: dict[int, str] | None = None) -> str:
    """`n` JSON lines {"a": i}; line numbers in `bad` (1-based) replaced by the given text."""
    bad = bad or {}
    return "".join(bad.get(i + 1, json.dumps({"a": i})) + "\n" for i in range(n))


HH = json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nAssistant: b"}) + "\n"
TRUNCATED_GZ = gzip.compress((HH * 400).encode())[:60]
MIXTURE = "seed: 0\nsize: {examples: 20}\ncomponents:\n  - tasks: [h]\n"

# ENOSPC in the middle of a build: the shard writer fails as a full disk would.
FULL_DISK = textwrap.dedent("""\
    import errno, sys
    import flanmix.mixture.render as render
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))
    render.write_shard = full
    from flanmix.cli import main
    sys.exit(main(sys.argv[1:]))
    """)


# (id, files to write {relative path: text | bytes}, argv ({tmp} is the case folder), what stderr must contain)
CASES: list[tuple[str, dict, list[str], str]] = [
    # --- YAML: bombs, bad bytes, typos (issue 17 points 2, 7, 9)
    ("alias-bomb-task-spec", {"reg/h.yaml": spec() + bomb()}, ["tasks", "validate", "{tmp}/reg"],
     "YAML aliases expand the document"),
    ("alias-bomb-mixture", {"mix.yaml": MIXTURE + bomb(top="description_extra")},
     ["build", "{tmp}/mix.yaml", "--out", "{tmp}/out"], "YAML aliases expand the document"),
    ("alias-bomb-train-config", {"sft.yaml": "model: m\ndata: d.jsonl\n" + bomb(top="deepspeed")},
     ["train", "sft", "--config", "{tmp}/sft.yaml"], "YAML aliases expand the document"),
    ("alias-recursive", {"reg/h.yaml": spec() + "fields: &a {x: *a}\n"}, ["tasks", "validate", "{tmp}/reg"],
     "alias refers to a node that contains it"),
    ("yaml-nul-byte", {"reg/h.yaml": spec().replace("cluster: hostile", "cluster: hos\0tile")},
     ["tasks", "validate", "{tmp}/reg"], "h.yaml:2: malformed YAML"),
    ("yaml-nested-too-deep", {"reg/h.yaml": spec() + "fields: " + "[" * 5000 + "]" * 5000 + "\n"},
     ["tasks", "list", "--registry", "{tmp}/reg"], "malformed YAML"),
    ("yaml-not-utf8", {"reg/h.yaml": b"name: h\ncluster: \xff\xfe\n"}, ["tasks", "list", "--registry", "{tmp}/reg"],
     "not UTF-8"),
    ("yaml-not-a-mapping", {"reg/h.yaml": "- just\n- a list\n"}, ["tasks", "list", "--registry", "{tmp}/reg"],
     "must be a YAML mapping"),
    ("misspelled-key", {"reg/h.yaml": spec().replace("cluster:", "clustr:")}, ["tasks", "validate", "{tmp}/reg"],
     "h.yaml:2: clustr: unknown key; did you mean cluster?"),
    ("mixture-weight-inf", {"reg/h.yaml": spec(), "mix.yaml": MIXTURE.replace("[h]", "[h]\n    weight: .inf")},
     ["build", "{tmp}/mix.yaml", "--registry", "{tmp}/reg", "--out", "{tmp}/out"],
     "mix.yaml:5: components[0].weight: Input should be a finite number"),
    ("mixture-size-nan", {"reg/h.yaml": spec(), "mix.yaml": MIXTURE.replace("examples: 20", "examples: .nan")},
     ["build", "{tmp}/mix.yaml", "--registry", "{tmp}/reg", "--out", "{tmp}/out"], "size.examples"),
    # --- task specs run no code and read no files outside their registry folder (point 3)
    ("builtin-sys-exit", {"reg/h.yaml": spec(source="{builtin: 'sys:exit'}")}, ["tasks", "validate", "{tmp}/reg"],
     "unknown generator 'sys:exit'"),
    ("builtin-code-interact", {"reg/h.yaml": spec(source="{builtin: 'code:interact'}")},
     ["tasks", "validate", "{tmp}/reg"], "unknown generator 'code:interact'"),
    ("builtin-imported-name", {"reg/h.yaml": spec(source="{builtin: steering.re}")},
     ["tasks", "validate", "{tmp}/reg"], "unknown generator 'steering.re'"),
    ("builtin-dotted-module", {"reg/h.yaml": spec(source="{builtin: os.system}")},
     ["tasks", "validate", "{tmp}/reg"], "unknown generator 'os.system'"),
    ("files-absolute-glob", {"reg/h.yaml": spec(source="{files: '/etc/host*', format: csv, columns: [a]}")},
     ["tasks", "validate", "{tmp}/reg"], "outside the task's registry folder"),
    ("files-parent-folder", {"reg/h.yaml": spec(source="{files: ../secret.jsonl}"), "secret.jsonl": rows(3)},
     ["tasks", "validate", "{tmp}/reg"], "outside the task's registry folder"),
    ("files-glob-climbs-out", {"reg/h.yaml": spec(source="{files: 'sub/../../*.jsonl'}"), "reg/sub/x": "",
                               "secret.jsonl": rows(3)},
     ["render", "h", "--registry", "{tmp}/reg"], "outside the task's registry folder"),
    ("files-symlink-out", {"reg/h.yaml": spec(source="{files: link.jsonl}"), "secret.jsonl": rows(3),
                           "reg/link.jsonl": ("symlink", "../secret.jsonl"), "mix.yaml": MIXTURE},
     ["build", "{tmp}/mix.yaml", "--registry", "{tmp}/reg", "--out", "{tmp}/out"], "resolved:"),
    ("files-allowed-elsewhere-only", {"reg/h.yaml": spec(source="{files: ../secret.jsonl}"), "secret.jsonl": rows(3),
                                      "other/x": ""},
     ["tasks", "validate", "{tmp}/reg", "--allow-path", "{tmp}/other"], "outside the task's registry folder"),
    ("template-ref-absolute", {"reg/h.yaml": "name: h\ncluster: c\nsource: {builtin: arithmetic.add}\n"
                                             "templates: /etc/some/templates.yaml\n"},
     ["tasks", "list", "--registry", "{tmp}/reg"], "is not a name inside a templates/ folder"),
    ("template-ref-climbs-out", {"reg/h.yaml": "name: h\ncluster: c\nsource: {builtin: arithmetic.add}\n"
                                               "templates: ../../outside\n", "outside.yaml": "zero_shot: []\n"},
     ["tasks", "list", "--registry", "{tmp}/reg"], "is not a name inside a templates/ folder"),
    ("jinja-attribute-escape", {"reg/h.yaml": spec(template="{{ a.__class__.__mro__ }}")},
     ["tasks", "validate", "{tmp}/reg"], "h.yaml"),
    # --- data files: their own line, one line (point 6) and no tracebacks (point 4)
    ("jsonl-bad-line-51", {"reg/h.yaml": spec(source="{files: d.jsonl}"), "reg/d.jsonl": rows(60, {51: "{bad"}),
                           "mix.yaml": MIXTURE},
     ["build", "{tmp}/mix.yaml", "--registry", "{tmp}/reg", "--out", "{tmp}/out"], "d.jsonl:51: invalid JSON"),
    ("jsonl-not-utf8", {"reg/h.yaml": spec(source="{files: d.jsonl}"),
                        "reg/d.jsonl": rows(5).encode() + b'{"a": "\xff"}\n'},
     ["tasks", "validate", "{tmp}/reg"], "d.jsonl:6: not UTF-8"),
    ("registry-symlink-loop", {"reg/h.yaml": spec(), "reg/a.yaml": ("symlink", "b.yaml"),
                               "reg/b.yaml": ("symlink", "a.yaml")},
     ["tasks", "list", "--registry", "{tmp}/reg"], "symlink loop"),
    ("manifest-shards-wrong-type", {"m/manifest.json": "MANIFEST:shards=5"}, ["stats", "{tmp}/m"],
     "shards: Input should be a valid list"),
    ("manifest-shard-path-escapes", {"m/manifest.json": "MANIFEST:shard-file=../../etc/passwd"},
     ["stats", "{tmp}/m"], "shards[0].file"),
    ("manifest-not-json", {"m/manifest.json": "{oops"}, ["stats", "{tmp}/m"], "manifest.json:1: cannot read manifest"),
    # --- preference files (point 4)
    ("prefs-binary", {"p.jsonl": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8},
     ["prefs", "import", "hh-rlhf", "{tmp}/p.jsonl", "--out", "{tmp}/out.jsonl"], "not UTF-8"),
    ("prefs-truncated-gzip", {"p.jsonl.gz": TRUNCATED_GZ},
     ["prefs", "import", "hh-rlhf", "{tmp}/p.jsonl.gz", "--out", "{tmp}/out.jsonl"], "truncated or corrupt gzip"),
    ("prefs-missing-key", {"p.jsonl": json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b"}) + "\n"},
     ["prefs", "import", "hh-rlhf", "{tmp}/p.jsonl", "--out", "{tmp}/out.jsonl"], "p.jsonl:1:"),
    ("prefs-hh-one-bad-line", {"p.jsonl": HH * 3 + "{oops\n"},
     ["prefs", "import", "hh-rlhf", "{tmp}/p.jsonl", "--out", "{tmp}/out.jsonl"], "p.jsonl:4:"),
    ("prefs-pandalm-strings", {"p.json": json.dumps(["a", "b"])},
     ["prefs", "import", "pandalm", "{tmp}/p.json", "--out", "{tmp}/out.jsonl"], "not a PandaLM file"),
    ("prefs-from-bad-line", {"p.jsonl": json.dumps({"prompt": "p", "answer": "a"}) + "\n[1, 2]\n"},
     ["prefs", "generate", "--from", "{tmp}/p.jsonl", "--out", "{tmp}/out.jsonl"], "p.jsonl:2:"),
    # --- outputs: unwritable, occupied, full disk, locked (points 4, 5)
    ("prefs-out-unwritable", {"file": "x"},
     ["prefs", "generate", "--tasks", "str_reverse", "--n", "2", "--out", "{tmp}/file/out.jsonl"], "cannot write"),
    ("build-out-under-a-file", {"file": "x"}, ["build", "demo", "--out", "{tmp}/file/out"], "cannot write"),
    ("build-out-is-a-file", {"reg/h.yaml": spec(), "mix.yaml": MIXTURE, "out": "x"},
     ["build", "{tmp}/mix.yaml", "--registry", "{tmp}/reg", "--out", "{tmp}/out", "--overwrite"],
     "output path is a file"),
    ("build-out-unusable", {}, ["build", "demo", "--out", "{tmp}/..", "--overwrite"], "not a usable output path"),
    ("build-out-read-only-fs", {}, ["build", "demo", "--out", "/proc/flanmix-out"], "cannot write"),
    ("build-disk-full", {"reg/h.yaml": spec(), "mix.yaml": MIXTURE},
     ["PYTHON", FULL_DISK, "build", "{tmp}/mix.yaml", "--registry", "{tmp}/reg", "--out", "{tmp}/out", "--quiet"],
     "No space left on device"),
    ("build-out-locked", {"reg/h.yaml": spec(), "mix.yaml": MIXTURE, "LOCK": "out"},
     ["build", "{tmp}/mix.yaml", "--registry", "{tmp}/reg", "--out", "{tmp}/out"], "another process is writing"),
    # --- templates and sizes that would take the machine (point 1): refused before they allocate or past the limit
    ("template-string-times-1e9", {"reg/h.yaml": spec(template="{{ 'a' * 10**9 }}")},
     ["tasks", "validate", "{tmp}/reg"], "h.yaml:6: zero_shot[0].input: '*' would build 1,000,000,000"),
    ("template-center-1e9", {"reg/h.yaml": spec(template="{{ a | center(10**9) }}")},
     ["render", "h", "--registry", "{tmp}/reg", "-n", "1"], "center would build"),
    ("template-list-times-1e8", {"reg/h.yaml": spec(template="{{ ([0] * 10**8) | length }}"), "mix.yaml": MIXTURE},
     ["build", "{tmp}/mix.yaml", "--registry", "{tmp}/reg", "--out", "{tmp}/out", "--num-proc", "2", "--quiet"],
     "'*' would build 100,000,000"),
    ("template-power-mod", {"reg/h.yaml": spec(template="{{ (9 ** 999999999) % 7 }}")},
     ["tasks", "validate", "{tmp}/reg"], "more than 100,000 digits"),
    ("template-lipsum", {"reg/h.yaml": spec(template="{{ lipsum(n=100000) }}")}, ["tasks", "validate", "{tmp}/reg"],
     "lipsum would build"),
    ("template-nested-ranges", {"reg/h.yaml": spec(template="{% for i in range(99999) %}{% for j in range(99999) %}"
                                                            "{% endfor %}{% endfor %}"),
                                "ENV": {"FLANMIX_TEMPLATE_MAX_SECONDS": "1"}},
     ["tasks", "validate", "{tmp}/reg"], "template render took longer than 1 s"),
    ("template-doubling-loop", {"reg/h.yaml": spec(template="{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
                                                            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}")},
     ["tasks", "validate", "{tmp}/reg"], "'~' would build"),
    ("mixture-examples-1e12", {"reg/h.yaml": spec(), "mix.yaml": MIXTURE.replace("20", "1000000000000")},
     ["build", "{tmp}/mix.yaml", "--registry", "{tmp}/reg", "--out", "{tmp}/out"],
     "mix.yaml:2: size: a plan of 1,000,000,000,000 rows would need"),
    ("spec-examples-1e11", {"reg/h.yaml": spec(source="{builtin: arithmetic.add, examples: 100000000000}")},
     ["tasks", "validate", "{tmp}/reg"], "100,000,000,000 generated rows would need"),
    # --- nonsense numbers (point 9)
    ("validate-rows-negative", {}, ["tasks", "validate", "--rows", "-1"], "--rows: must be at least 0"),
    ("render-n-negative", {}, ["render", "str_reverse", "-n", "-1"], "-n: must be at least 1"),
    ("build-num-proc-zero", {}, ["build", "demo", "--out", "{tmp}/out", "--num-proc", "0"], "--num-proc"),
    ("unknown-command", {}, ["frobnicate"], "invalid choice"),
    # --- training and evaluation (points 4, 9)
    ("train-epochs-inf", {"sft.yaml": "model: m\ndata: d.jsonl\noutput_dir: run\nepochs: .inf\n"},
     ["train", "sft", "--config", "{tmp}/sft.yaml"], "sft.yaml:4: epochs"),
    ("train-output-dir-is-a-file", {"sft.yaml": "model: m\ndata: d.jsonl\noutput_dir: run\n", "run": "x"},
     ["train", "sft", "--config", "{tmp}/sft.yaml"], "sft.yaml:3: output_dir: "),
    ("init-model-binary-corpus", {"corpus.bin": bytes(range(128, 256)) * 8},
     ["init-model", "--size", "tiny", "--out", "{tmp}/model", "--corpus", "{tmp}/corpus.bin"], "not UTF-8 text"),
    ("eval-out-unwritable", {"file": "x"},
     ["eval", "{tmp}/no-model", "--tasks", "str_reverse", "--out", "{tmp}/file/results.json"], "cannot write"),
    ("eval-bbh-shots-negative", {}, ["eval", "m", "--tasks", "bbh:x", "--bbh-shots", "-1"],
     "--bbh-shots: must be at least 0"),
    ("eval-limit-zero", {}, ["eval", "m", "--tasks", "str_reverse", "--limit", "0"], "--limit: must be at least 1"),
    ("ablate-jobs-zero", {}, ["ablate", "spec.yaml", "--out", "{tmp}/out", "--jobs", "0"],
     "--jobs: must be at least 1"),
    # --- source slices, exploded rows and few-shot groups (issue 11)
    ("split-slice-malformed", {"reg/h.yaml": spec(source="{hub: some/ds, split: 'train[::2]'}")},
     ["tasks", "validate", "{tmp}/reg"], "malformed split 'train[::2]'"),
    ("split-slice-percent-range", {"reg/h.yaml": spec(source="{hub: some/ds, split: 'train[:200%]'}")},
     ["tasks", "validate", "{tmp}/reg"], "percent boundaries must lie between"),
    ("explode-not-a-list", {"reg/h.yaml": spec(source="{files: d.jsonl, explode: [a]}"), "reg/d.jsonl": rows(3)},
     ["render", "h", "--registry", "{tmp}/reg"], "column 'a' is a int, not a list"),
    ("explode-unequal-lengths", {"reg/h.yaml": spec(source="{files: d.jsonl, explode: [q, r]}"),
                                 "reg/d.jsonl": '{"a": 1, "q": [1, 2], "r": [1]}\n'},
     ["render", "h", "--registry", "{tmp}/reg"], "explode"),
    ("few-shot-group-undefined", {"reg/h.yaml": spec() + "few_shot_group: '{{ nope.x }}'\n"},
     ["render", "h", "--registry", "{tmp}/reg", "--variant", "fs_noopt"], "few_shot_group"),
    ("template-mix-set-missing", {"reg/h.yaml": spec() + "template_mix_templates: flan/nonexistent\n"},
     ["tasks", "validate", "{tmp}/reg"], "template_mix_templates: template set 'flan/nonexistent' not found"),
]


def _manifest(spec_text: str) -> str:
    """A valid manifest with one field broken as `MANIFEST:key=value` says."""
    manifest = {"spec_hash": "0", "seed": 0, "spec": {}, "build": {"format": "jsonl", "messages": False},
                "size": {"rows": 1, "planned": 1, "dedup_dropped": 0, "decontaminated": 0},
                "shards": [{"index": 0, "file": "train-00000.jsonl", "rows": 1, "sha256": "0",
                            "stats": {"rows": 1, "counts": [], "lengths": {}}}],
                "targets": [], "leaves": [], "lengths": {}}
    change = spec_text.split(":", 1)[1]
    if change == "shards=5":
        manifest["shards"] = 5
    else:
        manifest["shards"][0]["file"] = change.split("=", 1)[1]
    return json.dumps(manifest)


def _write(tmp: Path, files: dict) -> list:
    """Write a case's files; returns the lock handles it holds (closed by the caller)."""
    held = []
    for rel, content in files.items():
        if rel == "ENV":  # environment variables of the case (see run_flanmix)
            continue
        if rel == "LOCK":  # another writer holds the output folder's lock
            handle = open(tmp / f".{content}.lock", "w")  # noqa: SIM115 - held until the case ends
            fcntl.flock(handle, fcntl.LOCK_EX)
            held.append(handle)
            continue
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            path.symlink_to(content[1])
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif content.startswith("MANIFEST:"):
            path.write_text(_manifest(content))
        else:
            path.write_text(content)
    return held


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_flanmix(argv: list[str], cwd: Path, timeout: float = TIMEOUT, env: dict | None = None
                ) -> subprocess.CompletedProcess:
    """Run `flanmix ARGV` (or `python -c SCRIPT ARGS` when argv starts with PYTHON) capped in memory and time."""
    command = [sys.executable, "-c", argv[1], *argv[2:]] if argv[0] == "PYTHON" else \
        [sys.executable, "-m", "flanmix", *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLANMIX_")} | (env or {})
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, preexec_fn=_limits)


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} | {str(p.relative_to(root)) for p in root.glob(".*")}


@pytest.mark.parametrize("name, files, argv, expected", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, name, files, argv, expected):
    held = _write(tmp_path, files)
    before = _snapshot(tmp_path)
    try:
        proc = run_flanmix([a.replace("{tmp}", str(tmp_path)) for a in argv], tmp_path, env=files.get("ENV"))
    finally:
        for handle in held:
            handle.close()
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "Traceback" not in proc.stderr, err[-2000:]
    assert len(err.splitlines()) == 1, err[-2000:]
    assert expected in err, err
    left = _snapshot(tmp_path) - before
    assert not left, f"left behind: {sorted(left)}"


def test_case_count():
    assert len(CASES) >= 30


def test_every_yaml_load_goes_through_core():
    """Pipelines, ablation specs, training configs, importers: no module parses YAML itself, so the bounds of
    `flanmix.core.yamlio` (aliases, depth, one-line errors) hold for every file flanmix reads."""
    root = Path(__file__).resolve().parents[2]
    loaders = ("yaml.load(", "yaml.safe_load", "yaml.full_load", "yaml.unsafe_load", "yaml.compose", "yaml.parse(",
               "yaml.load_all", "yaml.safe_load_all", "CSafeLoader", "yaml.SafeLoader", "yaml.Loader")
    offenders = [f"{path.relative_to(root)}: {name}" for top in ("flanmix", "trainers")
                 for path in (root / top).rglob("*.py") if path.name != "yamlio.py"
                 for name in loaders if name in path.read_text(encoding="utf-8")]
    assert not offenders


def test_closed_pipe_ends_quietly(tmp_path):
    """`flanmix render ... | head -1`: no BrokenPipeError traceback, nothing on stderr."""
    reader = subprocess.Popen([sys.executable, "-m", "flanmix", "render", "str_reverse", "-n", "500"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limits, cwd=tmp_path)
    reader.stdout.readline()
    reader.stdout.close()  # the reader goes away, as `head -1` does
    _, err = reader.communicate(timeout=TIMEOUT)
    assert reader.returncode in (0, 141) and err == b"", err.decode()[-2000:]


def test_stale_temporaries_of_dead_builds_are_removed(tmp_path):
    """A `OUT.tmp-PID/` of a build that died (PID not running) is removed by the next build, with one line."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"out.tmp-{dead.stdout.strip()}"
    stale.mkdir()
    (stale / "train-00000.parquet").write_text("half")
    _write(tmp_path, {"reg/h.yaml": spec(), "mix.yaml": MIXTURE})
    proc = run_flanmix(["build", "mix.yaml", "--registry", "reg", "--out", "out", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"flanmix: removed {stale.relative_to(tmp_path)} (left by process "
                                                f"{dead.stdout.strip()}, which is no longer running)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix.yaml", "out", "reg"]

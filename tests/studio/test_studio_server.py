"""`flanmix studio` without a browser: the guards (token, host, confined paths), bad input as messages, render
speed, the pieces behind the pages, and a clean install from the wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import zipfile

import pytest
from studio_helpers import REPO, make_workspace, start_server

from flanmix.core.errors import FlanmixError
from flanmix.registry import Registry
from flanmix.studio import mixtures, runs, tasks
from flanmix.studio.config import StudioConfig, inside, under

pytest.importorskip("starlette")


def assert_message_page(status: int, body: str, *needles: str) -> None:
    """A problem shown in the layout: no traceback, no bare server error page."""
    assert status in (400, 403, 404), status
    assert "Traceback" not in body and "Internal Server Error" not in body
    assert 'class="msg error"' in body or '"error"' in body
    for needle in needles:
        assert needle in body, (needle, body[-2000:])


# ------------------------------------------------------------------------------------------------ guards

def test_write_actions_need_the_token(studio):
    text = studio.workspace.template_file.read_text()
    status, answer = studio.post("/api/tasks/studio_greet/save", {"text": text + "# x\n"}, token=False)
    assert status == 400 and "needs the studio's token" in answer["error"]
    status, answer = studio.post("/api/mixture/build", {"ref": "r0:small.yaml"}, token=False)
    assert status == 400 and "needs the studio's token" in answer["error"]
    assert studio.workspace.template_file.read_text() == text
    # Read-only pages work without it, and say so; the page opened with the token carries it for its scripts.
    status, body = studio.get("/tasks/studio_greet/edit")
    assert status == 200 and 'content=""' in body and "Saving needs the studio's token" in body
    status, body = studio.get(f"/tasks/studio_greet/edit?token={studio.token}")
    assert f'content="{studio.token}"' in body


def test_other_host_names_are_refused(studio):
    status, body = studio.get("/", headers={"Host": "evil.example:80"})
    assert status == 403 and "refused" in body


@pytest.mark.parametrize("path", [
    "/runs/view?path=../reg", "/runs/view?path=/etc", "/runs/file?path=../reg/greet.yaml",
    "/runs/file?path=sft-demo/metrics.jsonl", "/mixtures/view?ref=r0:../greet.yaml",
    "/mixtures/view?ref=bundled:/etc/passwd", "/mixtures/view?ref=zz:small.yaml", "/mixtures/view?ref=nothing",
])
def test_paths_outside_the_named_folders_are_refused(studio, path):
    status, body = studio.get(path)
    assert_message_page(status, body)


def test_bundled_files_are_never_written(studio):
    from flanmix.core.resources import bundled_dir

    bundled = bundled_dir("templates") / "arithmetic" / "add.yaml"
    before = bundled.read_text()
    status, answer = studio.post("/api/tasks/arith_add/save", {"text": before + "# changed\n"})
    assert status == 400 and "not in a writable registry folder" in answer["error"]
    assert bundled.read_text() == before and not bundled.with_name("add.yaml.bak").exists()
    status, body = studio.get("/tasks/arith_add/edit")
    assert status == 200 and "read-only" in body


def test_a_set_with_problems_is_not_saved(studio):
    path = studio.workspace.template_file
    before = path.read_text()
    status, answer = studio.post("/api/tasks/studio_greet/save", {"text": before.replace("{{ city }}", "{{ town }}")})
    assert status == 400 and "not saved" in answer["error"] and "town" in answer["error"]
    assert path.read_text() == before


def test_a_file_changed_on_disk_since_loading_is_not_overwritten(studio):
    path = studio.workspace.template_file
    before = path.read_text()
    stale = tasks.text_hash(before + "# what the editor loaded before someone changed the file\n")
    status, answer = studio.post("/api/tasks/studio_greet/save", {"text": before + "# mine\n", "base": stale})
    assert status == 400 and "changed on disk" in answer["error"] and path.read_text() == before


# ------------------------------------------------------------------------------------------------ bad input

def test_bad_input_is_a_message_never_a_server_error(studio):
    assert_message_page(*studio.get("/tasks/no_such_task"), "unknown task")
    assert_message_page(*studio.get("/no/such/page"), "no such page")
    status, body = studio.get("/mixtures/view?ref=r0:bad.yaml")  # the page itself, with the problem in it
    assert status == 200 and "unknown task &#39;no_such_task_here&#39;" in body and "bad.yaml:4" in body
    status, body = studio.get("/runs/view?path=broken")
    assert status == 200 and "metrics.jsonl:5: invalid JSON" in body
    status, answer = studio.post("/api/tasks/studio_greet/preview", {"text": "zero_shot: [{input: 1"})
    assert status == 200 and answer["errors"][0]["line"] and "malformed YAML" in answer["errors"][0]["message"]
    status, answer = studio.post("/api/tasks/studio_greet/preview", {"text": "zero_shot: []\ncot: []\n"})
    assert "needs at least one zero_shot or cot template" in answer["errors"][0]["message"]
    status, answer = studio.post("/api/mixture", {"ref": "r0:small.yaml", "overrides": {"components.0.weight": -1}})
    assert status == 400 and "greater than or equal to 0" in answer["error"]
    status, answer = studio.post("/api/mixture", {"ref": "r0:small.yaml", "overrides": {"seed": 3}})
    assert status == 400 and "cannot change 'seed'" in answer["error"]
    request = urllib.request.Request(studio.url + "/api/mixture", data=b"not json",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 400 and "not JSON" in json.loads(err.value.read())["error"]


def test_undefined_field_is_reported_at_its_line_with_validate_words(studio):
    text = studio.workspace.template_file.read_text().replace("Is {{ city }}", "Is {{ town }}")
    status, answer = studio.post("/api/tasks/studio_greet/preview", {"text": text, "n": 2})
    assert status == 200 and answer["html"]  # the other templates still render
    [error] = answer["errors"]
    assert error["line"] == 4 and "zero_shot[1].input: undefined variable at render time: 'town' is undefined" in (
        error["message"])


# ------------------------------------------------------------------------------------------------ speed

def _best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_render_speed(studio):
    """A task page with 20 rows x every template x 4 variants under 300 ms; a preview update under 200 ms."""
    studio.get("/tasks/arith_add")  # load the rows once
    page = _best(lambda: studio.get("/tasks/arith_add?n=20&random=1"))
    status, body = studio.get("/tasks/arith_add?n=20&random=1")
    assert status == 200 and body.count('class="render"') == 20 * 11 * 4  # 8 zero-shot + 3 CoT templates
    text = (REPO / "templates" / "arithmetic" / "add.yaml").read_text()
    preview = _best(lambda: studio.post("/api/tasks/arith_add/preview", {"text": text, "n": 3}))
    preview20 = _best(lambda: studio.post("/api/tasks/arith_add/preview", {"text": text, "n": 20}))
    print(f"task page (20 rows, 880 renders): {page * 1000:.0f} ms; preview 3 rows: {preview * 1000:.0f} ms, "
          f"20 rows: {preview20 * 1000:.0f} ms")
    assert page < 0.3 and preview < 0.2


# ------------------------------------------------------------------------------------------------ pieces

def test_under_and_inside(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "a" / "link").symlink_to(tmp_path / "outside")
    assert under(tmp_path / "a", "b") == (tmp_path / "a" / "b").resolve()
    for bad in ("../outside", "/etc", "", "link", "b/../../outside"):
        with pytest.raises(FlanmixError):
            under(tmp_path / "a", bad)
    assert inside(tmp_path / "a" / "b", [tmp_path / "a"]) and not inside(tmp_path / "outside", [tmp_path / "a"])
    config = StudioConfig(writable=(tmp_path / "a",))
    assert config.is_writable(tmp_path / "a" / "b" / "x.yaml") and not config.is_writable(tmp_path / "outside" / "x")


def test_variant_counts_match_the_compiled_sets():
    registry = Registry.discover()
    for task in registry.select("collection:flanmix") + registry.select("collection:CoT")[:5]:
        assert tasks.task_variants(task) == task.variants(), task.name
        counts = tasks.variant_counts(task.templates)
        for kind, count in counts.items():
            assert count == task.num_templates(template_type=kind), (task.name, kind)


def test_overrides_and_absolute_paths(tmp_path):
    data = {"rate": {"by": "examples", "cap": 10}, "components": [
        {"task": "a", "weight": 1}, {"mixture": {"name": "sub", "rate": {"by": "temperature", "temperature": 2},
                                                 "components": [{"cluster": "x"}]}, "weight": 2},
        {"mixture": "other.yaml"}], "decontaminate": {"files": ["eval/*.json", "/abs/x.json"]},
        "size": {"tokens": 10, "tokenizer": "tok"}}
    assert [k["key"] for k in mixtures.knobs(data)] == [
        "rate.cap", "components.0.weight", "components.1.weight", "components.1.mixture.rate.cap",
        "components.1.mixture.components.0.weight", "components.2.weight"]
    changed = mixtures.apply_overrides(data, mixtures.parse_overrides(
        {"components.1.mixture.components.0.weight": "0.5", "rate.cap": 20, "size.examples": 100, "x.weight": ""}))
    assert changed["components"][1]["mixture"]["components"][0]["weight"] == 0.5 and changed["rate"]["cap"] == 20
    assert changed["size"] == {"examples": 100} and data["rate"]["cap"] == 10  # the original is untouched
    with pytest.raises(FlanmixError, match="no such setting"):
        mixtures.apply_overrides(data, {"components.7.weight": 1.0})
    with pytest.raises(FlanmixError, match="not a number"):
        mixtures.parse_overrides({"rate.cap": "lots"})
    (tmp_path / "other.yaml").write_text("components: [{task: a}]\n")
    fixed = mixtures.absolutized(data, tmp_path)
    assert fixed["components"][2]["mixture"] == str((tmp_path / "other.yaml").resolve())
    assert fixed["decontaminate"]["files"] == [str(tmp_path / "eval/*.json"), "/abs/x.json"]
    assert fixed["size"]["tokenizer"] == str(tmp_path / "tok")


def test_target_shares_are_the_figures_of_flanmix_stats(tmp_path):
    """The page's target shares equal the targets `flanmix stats` reports for the built mixture."""
    from flanmix.mixture import build
    from flanmix.stats import mixture_stats

    workspace = make_workspace(tmp_path)
    registry = Registry.discover([workspace.registry])
    path = workspace.registry / "mixtures" / "small.yaml"
    view = mixtures.load(path, registry, {"components.0.weight": 3.0, "size.examples": 300})
    built = build(mixtures.apply_overrides(view.data, {}), tmp_path / "out", registry=registry, progress=False)
    stats = mixture_stats(built.out_dir)
    for kind in ("component", "task", "template_type"):
        want = {i["name"]: i["target"] for i in stats["proportions"][kind]}
        got = {i["name"]: i["target"] for i in view.shares[kind]}
        assert got == pytest.approx(want), kind
    rows = mixtures.sample_rows(view, count=5)
    assert len(rows) == 5 and {"inputs", "targets", "task_name", "template_type"} <= set(rows[0])


def test_runs_discovery_and_damaged_files(tmp_path):
    workspace = make_workspace(tmp_path)
    found = {e["rel"]: e for e in runs.discover(workspace.runs)}
    assert set(found) == {"broken", "live", "sft-demo", "tiny-ablation"}
    assert found["sft-demo"]["summary"].startswith("step 400") and "damaged" in found["broken"]["summary"]
    metrics = runs.read_metrics(workspace.runs / "broken" / "metrics.jsonl")
    assert metrics["error"].endswith("metrics.jsonl:5: invalid JSON: Expecting ',' delimiter (expected one JSON value "
                                     "per line)") and len(metrics["series"]["loss"]) == 4
    (workspace.runs / "evals").mkdir()
    (workspace.runs / "evals" / "report.json").write_text(json.dumps({"tasks": {}, "overall": {"score": 0.5}}))
    (workspace.runs / "evals" / "other.json").write_text("{not json")
    found = {e["rel"]: e for e in runs.discover(workspace.runs)}
    assert found["evals/report.json"]["kind"] == "eval" and "evals/other.json" not in found
    blocks = runs.markdown_blocks((workspace.runs / "tiny-ablation" / "results.md").read_text())
    assert [b["kind"] for b in blocks] == ["heading", "text", "table"] and len(blocks[2]["rows"]) == 2


# ------------------------------------------------------------------------------------------------ install

def test_wheel_ships_the_studio_and_serves_it(tmp_path):
    """`pip install flanmix[studio]` from the wheel: pages, scripts and styles are package data (no CDN)."""
    wheel_dir = tmp_path / "wheel"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(REPO)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(wheel_dir.glob("flanmix-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    studio_dir = REPO / "flanmix" / "studio"
    for path in sorted(studio_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            assert f"flanmix/studio/{path.relative_to(studio_dir).as_posix()}" in names
    for path in studio_dir.glob("templates/*.html"):
        assert "http://" not in path.read_text() and "https://" not in path.read_text()  # nothing from a CDN
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    process, url, token = start_server(["--runs", str(tmp_path / "runs"), "--host", "127.0.0.2"], cwd=tmp_path,
                                       env=env)
    try:
        for path in ("/static/studio.js", "/static/studio.css", f"/tasks/arith_add?token={token}", "/mixtures"):
            with urllib.request.urlopen(url + path, timeout=60) as response:
                assert response.status == 200
                body = response.read().decode()
        assert "demo" in body  # the bundled mixtures, found from the installed package
    finally:
        process.terminate()
        stderr = process.communicate(timeout=10)[1]
    assert "WARNING: listening on 127.0.0.2" in stderr

"""`flanmix studio` in a real browser: Playwright driving Debian's chromium against a studio started on a free
loopback port (tests/studio/conftest.py).

Screenshots go to the test's temporary folder; `FLANMIX_STUDIO_SHOTS=docs/studio` writes the documentation's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing (/usr/bin/chromium; "
                                                              ".ci/run installs it with apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra has it)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, studio):
    """A page at desktop width that opened the printed URL (so it holds the token); fails on any script error."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{studio.url}/?token={studio.token}")
    yield page
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("FLANMIX_STUDIO_SHOTS")
    folder = Path(target) if target else tmp_path_factory.mktemp("shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def visible_rows(page) -> int:
    return page.locator("#tasks tbody tr:not([hidden])").count()


def test_tasks_table_browse_and_filter(page, studio, shots):
    page.goto(studio.url + "/")
    total = page.locator("#tasks tbody tr").count()
    assert total > 300 and visible_rows(page) == total
    page.fill("#q", "studio_gr")
    assert visible_rows(page) == 1
    assert page.locator("#tasks tbody tr:not([hidden]) a").inner_text() == "studio_greet"
    page.fill("#q", "")
    page.select_option("#cluster", "arithmetic")
    assert visible_rows(page) == 5
    assert "cluster=arithmetic" in page.url
    page.reload()  # the filters live in the URL
    assert page.input_value("#cluster") == "arithmetic" and visible_rows(page) == 5
    page.fill("#q", "no task is called like this")
    assert visible_rows(page) == 0 and page.locator("#none").is_visible()
    page.goto(studio.url + "/?collection=flanmix")
    assert visible_rows(page) == page.locator("#tasks tbody tr[data-collection=flanmix]").count() > 30
    page.screenshot(path=shots / "tasks.png")
    page.locator("#tasks a", has_text="arith_add").click()
    page.wait_for_url(re.compile(r"/tasks/arith_add$"))


def test_task_page_variants_cot_inversion_and_seed(page, studio, shots):
    page.goto(studio.url + "/tasks/studio_greet")
    visible = page.locator("section.variant:not([hidden])")
    assert visible.get_attribute("data-variant") == "zs_opt"
    assert visible.locator(".tmpl").count() == 4  # 3 zero-shot (1 inverted) + 1 CoT
    assert visible.locator(".badge.cot").count() == 1 and visible.locator(".badge.inv").count() == 1
    first = visible.locator("pre.inputs").first.inner_text()
    assert first.startswith("Hello Ada! Do you live in Paris?") and "OPTIONS:\n- yes\n- no" in first
    page.click(".tabs button[data-variant=zs_noopt]")
    visible = page.locator("section.variant:not([hidden])")
    assert visible.get_attribute("data-variant") == "zs_noopt"
    assert "OPTIONS" not in visible.locator("pre.inputs").first.inner_text()
    page.click(".tabs button[data-variant=fs_noopt]")
    shot = page.locator("section.variant:not([hidden]) pre.inputs").first.inner_text()
    assert shot.count("Hello ") >= 2 and "A:" in shot  # exemplars glued by the few-shot format
    assert page.url.endswith("#fs_noopt")

    page.check("#controls input[name=random]")
    page.fill("#controls input[name=seed]", "3")
    page.click("#controls button[type=submit]")
    page.wait_for_url(re.compile(r"random=1"))
    page.click(".tabs button[data-variant=zs_opt]")
    randomized = page.locator("section.variant:not([hidden]) pre.inputs").all_inner_texts()
    assert page.is_checked("#controls input[name=random]")
    assert any("OPTIONS:\n- yes\n- no" not in text for text in randomized[:2])  # another options style was drawn

    page.click("#data tbody tr[data-row='2']")  # render on another row
    page.wait_for_url(re.compile(r"row=2"))
    assert page.locator("#data tr.chosen").get_attribute("data-row") == "2"
    page.goto(studio.url + "/tasks/arith_add?random=1&seed=1#zs_opt")
    page.screenshot(path=shots / "task.png", full_page=True, clip={"x": 0, "y": 0, "width": 1440, "height": 1400})


def _validate_message(studio, text: str, tmp_path: Path) -> str:
    """What `flanmix tasks validate` prints for the registry with `text` as the template file (the copy's paths
    turned back into the original's)."""
    registry = studio.workspace.registry
    copy = tmp_path / "reg"
    shutil.copytree(registry, copy)
    (copy / studio.workspace.template_file.relative_to(registry)).write_text(text)
    result = subprocess.run([sys.executable, "-m", "flanmix", "tasks", "validate", str(copy)], capture_output=True,
                            text=True, env={**os.environ, "FLANMIX_REGISTRY": ""})
    line = next(x for x in result.stderr.splitlines() if x.startswith("error: "))
    return line[len("error: "):].replace(str(copy), str(registry))


@pytest.fixture
def restored_templates(studio):
    """The test task's template file, put back (and the registry reloaded) after the test."""
    template_file = studio.workspace.template_file
    original = template_file.read_text()
    yield template_file
    template_file.write_text(original)
    template_file.with_name(template_file.name + ".bak").unlink(missing_ok=True)
    studio.get("/?reload=1")


def test_editor_live_preview_error_at_line_save_and_reload(page, studio, shots, tmp_path, restored_templates):
    template_file = restored_templates
    original = template_file.read_text()
    page.goto(studio.url + "/tasks/studio_greet/edit")
    page.wait_for_selector("body[data-previewed]")
    assert "Hello Ada! Do you live in Paris?" in page.inner_text("#preview")

    edited = original.replace("Hello {{ name }}!", "Bonjour {{ name }}!")
    page.fill("#text", edited)
    page.wait_for_function("document.querySelector('#preview').textContent.includes('Bonjour Ada!')")
    timings = [int(page.get_attribute("#status", "data-ms"))]
    for word in ("Salut", "Hola", "Bonjour"):  # a few more edits, to time the round trip
        page.fill("#text", original.replace("Hello {{ name }}!", word + " {{ name }}!"))
        page.wait_for_function(f"document.querySelector('#preview').textContent.includes('{word} Ada!')")
        timings.append(int(page.get_attribute("#status", "data-ms")))
    print(f"preview round trips (ms): {timings}")
    assert min(timings) < 200

    broken = edited.replace("Bonjour {{ name }}!", "Bonjour {{ name !")
    page.fill("#text", broken)
    page.wait_for_selector("#errors li")
    error = page.inner_text("#errors li")
    assert error.startswith("line 3") and "Jinja syntax error" in error
    assert page.locator("#gutter span.err").all_inner_texts() == ["3"]
    assert _validate_message(studio, broken, tmp_path) in error  # the words of `flanmix tasks validate`
    page.screenshot(path=shots / "editor.png")

    page.fill("#text", edited)
    page.wait_for_function("document.querySelectorAll('#errors li').length === 0")
    page.click("#save")
    page.wait_for_selector("#save-status >> text=saved")
    assert template_file.read_text() == edited
    assert template_file.with_name(template_file.name + ".bak").read_text() == original
    page.reload()
    assert "Bonjour {{ name }}!" in page.input_value("#text")
    page.goto(studio.url + "/tasks/studio_greet")
    assert page.locator("pre.inputs").first.inner_text().startswith("Bonjour Ada!")


def test_mixture_weight_moves_shares_and_bad_mixture_is_a_message(page, studio):
    page.goto(studio.url + "/mixtures")
    page.click("#mixtures a >> text=small")
    page.wait_for_url(re.compile(r"ref=r0(:|%3A)small.yaml"))
    share = page.locator('#chart-component text.value[data-name="task:studio_greet"]')
    assert share.text_content().startswith("50.00%")
    page.fill('input[data-key="components.0.weight"]', "3")
    page.wait_for_function("""document.querySelector('#chart-component text.value[data-name="task:studio_greet"]')
                              .textContent.startsWith('75.00%')""")
    assert "+25.00" in share.text_content()
    assert "75.00%" in page.inner_text("#tree")
    page.fill('input[data-key="rate.cap"]', "5")  # every task now at its cap: equal shares inside a component
    page.wait_for_function("""document.querySelector('#chart-task text.value[data-name="arith_add"]')
                              .textContent.startsWith('5.00%')""")
    page.click("#sample")
    page.wait_for_selector(".sample")
    assert page.locator(".sample").count() == 8

    page.goto(studio.url + "/mixtures/view?ref=r0:bad.yaml")
    assert page.locator("#mix-error").is_visible()
    assert "unknown task 'no_such_task_here'" in page.inner_text("#mix-error")
    assert page.locator(".srcview tr.err td.ln").inner_text() == "4"


def test_build_runs_in_background_and_shows_stats(page, studio, shots):
    page.goto(studio.url + "/mixtures/view?ref=r0:small.yaml")
    page.fill('input[data-key="components.0.weight"]', "3")
    page.fill("#rows", "300")
    page.click("#build")
    page.wait_for_selector("#build-rows", timeout=120_000)
    assert page.get_attribute("#build-status", "data-state") == "done"
    assert "planned 300" in page.inner_text("#build-rows")
    out = studio.workspace.runs / "studio-builds" / "small"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["size"]["planned"] == 300
    assert manifest["spec"]["components"][0]["weight"] == 3  # the page's change went into the build
    realized = page.locator('#stats-component text.value[data-name="task:studio_greet"]').text_content()
    assert 55 < float(realized.split("%")[0]) <= 75  # target 75%; dedup drops some of the small task's repeats
    page.click("#sample")
    page.wait_for_selector(".sample")
    page.screenshot(path=shots / "mixture.png", full_page=True)


def test_runs_curves_evals_ablation_and_live_refresh(page, studio, shots):
    page.goto(studio.url + "/runs")
    listed = page.locator("#runs tbody a").all_inner_texts()
    assert listed == ["broken", "live", "sft-demo", "tiny-ablation"]
    page.screenshot(path=shots / "runs.png")
    page.click("#runs a >> text=sft-demo")
    page.wait_for_selector(".chart-card[data-metric=loss] path.curve")
    assert page.locator(".chart-card[data-metric=loss] path.curve").count() == 2  # loss and eval_loss
    assert page.locator(".chart-card[data-metric=lr] path.curve").count() == 1
    assert "0.710" in page.inner_text(".evaltable")
    page.screenshot(path=shots / "run.png")

    page.goto(studio.url + "/runs/view?path=broken")
    assert page.locator("#metrics-error").is_visible()
    assert "metrics.jsonl:5: invalid JSON" in page.inner_text("#metrics-error")
    assert page.locator(".chart-card[data-metric=loss] path.curve").count() == 1  # the curve up to the bad line

    page.goto(studio.url + "/runs/view?path=live")
    assert page.inner_text("#records") == "5 records"
    with (studio.workspace.runs / "live" / "metrics.jsonl").open("a") as handle:
        for step in (60, 70, 80):
            handle.write(json.dumps({"step": step, "loss": 1.0 / step, "lr": 1e-3}) + "\n")
    page.wait_for_function("document.querySelector('#records').textContent === '8 records'", timeout=15_000)

    page.goto(studio.url + "/runs/view?path=tiny-ablation")
    assert "0.355 ± 0.012" in page.inner_text("#results")
    assert page.evaluate("document.querySelector('.plots img').naturalWidth") > 0
    page.screenshot(path=shots / "ablation.png")
    page.click("a >> text=sft")
    page.wait_for_url(re.compile(r"n1-nano-s0(/|%2F)sft$"))
    page.wait_for_selector(".chart-card[data-metric=loss] path.curve")

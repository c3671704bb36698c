"""promptsource's custom Jinja filters, a folder import that survives bad files, and (when the sdist is already on
disk) the full promptsource 0.2.3 release of 279 template files."""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from flanmix.cli import main as cli
from flanmix.core.errors import FlanmixError
from flanmix.importers import promptsource
from flanmix.task import Example, Task
from flanmix.templates import ENV

RELEASE = "promptsource-0.2.3"
RELEASE_ENV = "FLANMIX_PROMPTSOURCE_RELEASE"  # an sdist, a wheel, or an extracted templates folder

_SQUADSHIFTS = """\
dataset: squadshifts
subset: nyt
templates:
  129b0f6f-3c65-4e7c-97c2-ef30cf92f417: !Template
    answer_choices: null
    id: 129b0f6f-3c65-4e7c-97c2-ef30cf92f417
    jinja: "Q: {{question}}\\n\\nA: \\n|||\\n{{answers['text'] | most_frequent | choice}}"
    metadata: !TemplateMetadata
      choices_in_prompt: null
      original_task: true
    name: cbqa qa
    reference: ''
"""


def test_most_frequent_filter_matches_promptsource():
    """promptsource's `most_frequent`: the items of the highest count, in order of first occurrence."""
    render = ENV.from_string("{{ xs | most_frequent | join(',') }}").render
    assert render(xs=["b", "a", "b", "c", "a"]) == "b,a"
    assert render(xs=["x", "y", "y"]) == "y"
    assert render(xs=[]) == ""


def _write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "templates.yaml").write_text(text, encoding="utf-8")
    return folder / "templates.yaml"


def test_most_frequent_template_imports_and_renders(tmp_path):
    path = _write(tmp_path / "squadshifts" / "nyt", _SQUADSHIFTS)
    [(spec, templates)] = promptsource.import_file(path, notes=[])
    row = {"question": "Who?", "context": "...", "answers": {"text": ["Ann", "Bo", "Bo"], "answer_start": [1, 5, 5]}}
    rendered = Task(spec, templates).render(Example("r0", row), template_type="zs_noopt", template_idx=0)
    assert rendered["inputs"] == "Q: Who?\n\nA:" and rendered["targets"] == "Bo"


def test_folder_import_reports_each_bad_file_and_writes_the_others(tmp_path, capsys):
    src = tmp_path / "templates"
    good = _write(src / "squadshifts" / "nyt", _SQUADSHIFTS)
    unknown_filter = _write(src / "bad_filter", _SQUADSHIFTS.replace("dataset: squadshifts\nsubset: nyt",
                                                                     "dataset: bad_filter").replace(
        "most_frequent", "no_such_filter"))
    malformed = _write(src / "broken", "dataset: broken\ntemplates:\n  a: !Template\n    jinja: 'unclosed\n  b: [\n")
    out = tmp_path / "out"
    assert cli(["import", "promptsource", str(src), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("flanmix: error:")]
    assert len(errors) == 2, captured.err
    assert f"{unknown_filter}:" in errors[0] and "no_such_filter" in errors[0]
    assert f"{malformed}:" in errors[1] and "YAML" in errors[1]
    assert "Traceback" not in captured.err
    assert "wrote 1 tasks" in captured.out
    assert (out / "ps.squadshifts.nyt.yaml").is_file() and good.is_file()

    failures: list[FlanmixError] = []
    items = promptsource.import_path(src, notes=[], failures=failures)
    assert [spec.name for spec, _ in items] == ["ps.squadshifts.nyt"] and len(failures) == 2
    with pytest.raises(FlanmixError, match="no_such_filter"):  # without a failures list, the first bad file raises
        promptsource.import_path(src, notes=[])
    with pytest.raises(FlanmixError, match="no_such_filter"):  # a folder where every file fails raises
        promptsource.import_path(src / "bad_filter", notes=[], failures=[])


# ------------------------------------------------------------------------------------------------ the full release

def _find_release() -> Path | None:
    """The promptsource 0.2.3 release if it is already on disk (never downloaded): $FLANMIX_PROMPTSOURCE_RELEASE, or
    an sdist/wheel in pip's wheel cache or the temp folder."""
    if os.environ.get(RELEASE_ENV):
        return Path(os.environ[RELEASE_ENV])
    pip_cache = Path(os.environ.get("PIP_CACHE_DIR", Path.home() / ".cache" / "pip"))
    for folder, pattern in ((pip_cache / "wheels", f"**/{RELEASE.replace('-', '*')}*"), (Path("/tmp"), f"{RELEASE}*")):
        found = sorted(folder.glob(pattern)) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def _release_templates(release: Path, into: Path) -> Path:
    """The release's `promptsource/templates` folder: as given, or extracted (only those files) from an archive."""
    if release.is_dir():
        return release
    into.mkdir()
    if release.suffix == ".whl":
        with zipfile.ZipFile(release) as archive:
            names = [n for n in archive.namelist() if n.startswith("promptsource/templates/")
                     and n.endswith("templates.yaml") and ".." not in n]
            archive.extractall(into, members=names)
        return into / "promptsource" / "templates"
    with tarfile.open(release) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and "/promptsource/templates/" in m.name
                   and m.name.endswith("templates.yaml") and ".." not in m.name and not m.name.startswith("/")]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # members are checked above anyway
        archive.extractall(into, members=members, **safe)
    return next(into.glob("*/promptsource/templates"))


def test_full_release_imports_without_traceback(tmp_path, capsys):
    release = _find_release()
    if release is None:
        pytest.skip(f"{RELEASE} is not on disk (no ${RELEASE_ENV}, nothing in pip's wheel cache or /tmp); the test "
                    "never downloads it")
    templates = _release_templates(release, tmp_path / "release")
    assert len(list(templates.rglob("templates.yaml"))) == 279
    code = cli(["import", "promptsource", str(templates), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert code == 0, captured.err  # every file imports, squadshifts' `most_frequent` included
    assert (tmp_path / "out" / "ps.squadshifts.nyt.yaml").is_file()

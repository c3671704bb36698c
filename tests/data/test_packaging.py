"""A non-editable install (a built wheel) must find the bundled templates, task specs and mixtures."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_ships_bundled_data_and_finds_it(tmp_path):
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(REPO)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheel_dir.glob("flanmix-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("flanmix/_bundled/templates/") for n in names)
    assert any(n.startswith("flanmix/_bundled/task_registry/") for n in names)
    assert any(n.startswith("flanmix/_bundled/mixtures/") for n in names)
    assert "flanmix/mixture/__init__.py" in names and "flanmix/preferences/__init__.py" in names
    assert any(n.startswith("trainers/") for n in names)

    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    code = ("import flanmix, flanmix.core.resources as r; from flanmix.registry import Registry; "
            "reg = Registry.discover(); print(flanmix.__file__); print(r.bundled_dir('templates')); "
            "print(len(reg)); t = reg.get('arith_add'); print(t.render(t.examples()[0])['targets']); "
            "from flanmix.mixture import find_mixture; print(find_mixture('demo'))")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    module_file, templates_dir, count, _, demo = result.stdout.splitlines()
    assert all(path.startswith(str(target)) for path in (module_file, templates_dir, demo))
    assert int(count) >= 1

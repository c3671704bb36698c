"""The command line without the training extra: a command that needs torch says so in one line (exit 2)."""

from __future__ import annotations

import subprocess
import sys


def _run_without(module: str, argv: list[str], cwd) -> subprocess.CompletedProcess:
    # `sys.modules[name] = None` makes every later `import name` fail as if the package were not installed.
    code = (f"import sys; sys.modules[{module!r}] = None; from flanmix.cli import main; "
            f"sys.exit(main({argv!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_ablate_without_torch_names_the_extra(repo_root, tmp_path):
    proc = _run_without("torch", ["ablate", "ablations/demo.yaml", "--out", str(tmp_path / "run"), "--dry-run"],
                        repo_root)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs torch" in lines[0] and "pip install 'flanmix[train]'" in lines[0], lines


def test_data_commands_run_without_torch(repo_root):
    proc = _run_without("torch", ["tasks", "list"], repo_root)
    assert proc.returncode == 0, proc.stderr
    assert "arith_add" in proc.stdout


def test_validate_checks_unreachable_hub_tasks_without_rows(repo_root, tmp_path, capsys, monkeypatch):
    """Offline and without a mirror, the bundled FLAN catalog's hub tasks cannot be rendered on rows: validate
    says so on one line and still fails on a template that does not compile."""
    from flanmix.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FLANMIX_HUB_MIRROR", raising=False)
    assert main(["tasks", "validate"]) == 0
    out = capsys.readouterr().out
    assert "0 problem(s)" in out and "checked without rows" in out and "--hub-mirror DIR" in out
    assert main(["tasks", "validate", "--hub-mirror", str(repo_root / "tests" / "fixtures" / "hub")]) == 0
    assert "checked without rows" not in capsys.readouterr().out
    reg = tmp_path / "reg"
    reg.mkdir()
    (reg / "broken.yaml").write_text(
        "name: broken_hub\ncluster: x\nsource: {hub: nobody/nothing}\n"
        "templates:\n  zero_shot:\n    - {input: '{{ question ', target: '{{ answer }}'}\n")
    assert main(["tasks", "validate", str(reg)]) == 2
    assert "broken.yaml" in capsys.readouterr().err

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

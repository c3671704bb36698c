"""Fixtures of the studio tests: a `flanmix studio` server on the test workspace (studio_helpers.py), started once
per session on a free loopback port."""

from __future__ import annotations

import subprocess

import pytest
from studio_helpers import Server, make_workspace, start_server


@pytest.fixture(scope="session")
def studio(tmp_path_factory) -> Server:
    """A studio on the test workspace (the registry is writable), for the whole session."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    workspace = make_workspace(tmp_path_factory.mktemp("studio"))
    process, url, token = start_server(["--writable", str(workspace.registry), "--runs", str(workspace.runs)],
                                       cwd=workspace.root)
    yield Server(url, token, process, workspace)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()

"""Where the bundled data (templates, task specs, mixtures) lives, in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # flanmix/


def bundled_dir(kind: str) -> Path:
    """Return the bundled folder `kind` ("templates", "task_registry" or "mixtures").

    A wheel carries them under `flanmix/_bundled/`; a source checkout (editable install) has them at the repo root.
    """
    installed = _PACKAGE_DIR / "_bundled" / kind
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / kind

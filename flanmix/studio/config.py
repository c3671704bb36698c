"""What a studio may touch: the registry folders it reads, the ones the editor may save into, the mixture folders,
the runs folder (where builds go too), and the per-launch token that guards write actions.

Every path a request names is a key of one of these folders plus a relative path; `under` resolves it (symlinks
included) and refuses anything that leaves the folder, so no request reaches a file outside the named folders.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from flanmix.core.errors import FlanmixError
from flanmix.core.resources import bundled_dir

BUILDS_FOLDER = "studio-builds"  # under the runs folder: the only folder a build may overwrite


def _new_token() -> str:
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class StudioConfig:
    """The folders and network settings of one studio launch."""

    registry: tuple[Path, ...] = ()  # extra registry folders, read like `--registry`
    writable: tuple[Path, ...] = ()  # registry folders the template editor may save into (read too)
    mixtures: tuple[Path, ...] = ()  # folders of mixture YAML files
    runs: Path = Path("runs")  # training runs and ablations; builds go to runs/studio-builds/
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = field(default_factory=_new_token)

    @property
    def registry_dirs(self) -> list[Path]:
        """Every registry folder to discover tasks in (the writable ones included), each once."""
        out: list[Path] = []
        for folder in (*self.registry, *self.writable):
            if folder.resolve() not in [p.resolve() for p in out]:
                out.append(folder)
        return out

    @property
    def builds(self) -> Path:
        """Where the studio writes the mixtures it builds."""
        return self.runs / BUILDS_FOLDER

    def mixture_roots(self) -> dict[str, Path]:
        """Folders holding mixture files, by key: `bundled`, `m0..` (--mixtures), `r0..` (a registry's mixtures/)."""
        roots = {"bundled": bundled_dir("mixtures")}
        roots.update({f"m{i}": folder for i, folder in enumerate(self.mixtures)})
        for i, folder in enumerate(self.registry_dirs):
            if (folder / "mixtures").is_dir():
                roots[f"r{i}"] = folder / "mixtures"
        return roots

    def is_writable(self, path: Path) -> bool:
        """Whether the editor may save `path`: inside a --writable folder and not inside the bundled data."""
        bundled = [bundled_dir(kind) for kind in ("templates", "task_registry", "mixtures")]
        return inside(path, self.writable) and not inside(path, bundled)


def inside(path: Path, roots: Iterable[Path]) -> bool:
    """Whether `path` (symlinks resolved) is one of `roots` or inside one."""
    real = path.resolve()
    for root in roots:
        top = root.resolve()
        if real == top or real.is_relative_to(top):
            return True
    return False


def under(root: Path, rel: str, *, what: str = "path") -> Path:
    """`root / rel` with symlinks resolved, refused unless it stays inside `root` (no absolute paths, no `..` out,
    no symlink out)."""
    if not rel or Path(rel).is_absolute() or "\x00" in rel:
        raise FlanmixError(f"{what} {rel!r} is not a path inside {root}", field="path",
                           expected="a relative path inside the folder")
    path = (root / rel).resolve()
    if not inside(path, [root]):
        raise FlanmixError(f"{what} {rel!r} is outside {root}", field="path",
                           expected="a path inside the folders the studio was started with")
    return path

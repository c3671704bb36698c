"""The bundled FLAN template sets (`templates/flan/`, `templates/flan2021/`) are exactly a fresh `flanmix import
flan` of FLAN's files, each behind the attribution header, with the Apache-2.0 NOTICE next to them."""

from __future__ import annotations

from pathlib import Path

from flanmix.importers.flan import import_flan
from flanmix.registry import find_template_set, read_template_set

FOLDERS = {"flan": "flan/v2/templates.py", "flan2021": "flan/templates.py"}


def split_header(text: str) -> tuple[list[str], str]:
    lines = text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    return [line.rstrip("\n") for line in lines[:n]], "".join(lines[n:])


def test_shipped_sets_equal_a_fresh_import(tmp_path, shared_data, repo_root):
    import_flan(shared_data / "templates" / "flan", tmp_path)
    for folder, origin in FOLDERS.items():
        fresh = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "templates" / folder).glob("*.yaml")}
        shipped_dir = repo_root / "templates" / folder
        shipped = {p.name: p.read_text(encoding="utf-8") for p in shipped_dir.glob("*.yaml")}
        assert sorted(shipped) == sorted(fresh), folder
        for name, text in shipped.items():
            header, body = split_header(text)
            assert body == fresh[name], f"templates/{folder}/{name} differs from a fresh import"
            assert "google-research/FLAN (commit e9e4ec6e2701" in header[0] and origin in header[0]
            assert any("Apache License 2.0" in line for line in header)
        notice = (shipped_dir / "NOTICE").read_text(encoding="utf-8")
        assert "google-research/FLAN" in notice and "e9e4ec6e2701" in notice and "Apache License" in notice
    csv = "flan_collection_info.csv"
    shipped_csv = (repo_root / "templates" / "flan" / csv).read_bytes()
    assert shipped_csv == (shared_data / "templates" / "flan" / csv).read_bytes()
    assert len(list((repo_root / "templates" / "flan").glob("*.yaml"))) == 121  # 120 keys + natinst inline fs
    assert len(list((repo_root / "templates" / "flan2021").glob("*.yaml"))) == 61


def test_shipped_sets_resolve_by_reference():
    path = find_template_set("flan/rte", env=False)
    assert path.parent.name == "flan" and Path(path).is_file()
    templates, _ = read_template_set(path)
    assert len(templates.zero_shot) == 10 and templates.options_style == "flan" and not templates.strip
    templates21, _ = read_template_set(find_template_set("flan2021/rte", env=False))
    assert len(templates21.zero_shot) == 10

"""Regenerate the bundled FLAN template sets (`templates/flan/`, `templates/flan2021/`) from FLAN's template files.

    python scripts/ship_flan_templates.py [FLAN_TEMPLATES_DIR]   # default: ../shared/data/templates/flan

The files are exactly what `flanmix import flan` writes, each preceded by the attribution header below;
`tests/data/test_flan_templates_shipped.py` checks the shipped files equal a fresh import.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flanmix.importers.flan import import_flan  # noqa: E402

COMMIT = "e9e4ec6e2701"
HEADER = (
    "# Converted by `flanmix import flan` from google-research/FLAN (commit {commit}, {origin}).\n"
    "# Copyright Google LLC, Apache License 2.0: see templates/flan/NOTICE. Do not edit by hand;\n"
    "# regenerate with scripts/ship_flan_templates.py.\n"
)
ORIGIN = {"flan": "flan/v2/templates.py", "flan2021": "flan/templates.py"}
NOTICE = f"""The template sets in templates/flan/ and templates/flan2021/ are converted from FLAN's template files:

  google-research/FLAN, https://github.com/google-research/FLAN, commit {COMMIT}
  flan/v2/templates.py, flan/v2/flan_templates_branched.py (-> templates/flan/)
  flan/templates.py (-> templates/flan2021/)
  flan/v2/flan_collection_info.csv (-> templates/flan/flan_collection_info.csv, unchanged; read by
  `flanmix catalog`)

Copyright Google LLC. Licensed under the Apache License, Version 2.0 (the "License"); you may not use these files
except in compliance with the License. You may obtain a copy of the License at

  http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the License is distributed
on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the License for
the specific language governing permissions and limitations under the License.

Changes: FLAN's Python tables were read as data (never executed) and rewritten as flanmix template-set YAML:
`{{name}}` placeholders became Jinja `{{{{ name }}}}`, each template records its FLAN table, key and index in
`source`. The wording, order and whitespace of every template are FLAN's.
"""


def header(folder: str) -> str:
    """The attribution comment at the top of each shipped file of `templates/<folder>/`."""
    return HEADER.format(commit=COMMIT, origin=ORIGIN[folder])


def main(src: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        import_flan(src, tmp)
        for folder in ORIGIN:
            out = ROOT / "templates" / folder
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            for path in sorted((Path(tmp) / "templates" / folder).glob("*.yaml")):
                (out / path.name).write_text(header(folder) + path.read_text(encoding="utf-8"), encoding="utf-8")
            (out / "NOTICE").write_text(NOTICE, encoding="utf-8")
            if folder == "flan":
                shutil.copyfile(Path(src) / "flan_collection_info.csv", out / "flan_collection_info.csv")
            print(f"{out}: {len(list(out.glob('*.yaml')))} template sets")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT.parent / "shared" / "data" / "templates" / "flan"))

"""A task without answer options whose template set words zs_opt and zs_noopt differently (FLAN's summarization
and QA tasks) keeps all four template types in a mixture: only sets without a separate no-options list fold their
*_opt rows into *_noopt."""

from __future__ import annotations

import textwrap

from flanmix.mixture import build
from flanmix.registry import Registry
from helpers import write_task


def _two_wordings(root):
    (root / "summ.yaml").write_text(textwrap.dedent("""\
        name: summ
        cluster: alpha
        source: {builtin: mixtest.pair, examples: 200}
        fields: {question: "{{ a }} + {{ b }}", answer: "{{ a + b }}"}
        templates:
          zero_shot:
            - {input: "With options wording: {{ question }}", target: "{{ answer }}"}
          zero_shot_no_options:
            - {input: "Plain wording: {{ question }}", target: "{{ answer }}"}
          few_shot_patterns:
            - {input: "FS with options wording: {{ question }}", target: "{{ answer }}"}
          few_shot_patterns_no_options:
            - {input: "FS plain wording: {{ question }}", target: "{{ answer }}"}
        """))


def test_separate_no_options_wording_keeps_opt_rows(tmp_path):
    _two_wordings(tmp_path)
    write_task(tmp_path, "plain", "alpha", 200, options=False, cot=False)
    registry = Registry.discover([tmp_path], bundled=False, env=False, python=False)
    assert registry.get("summ").variants() == ["zs_opt", "zs_noopt", "fs_opt", "fs_noopt"]
    assert registry.get("plain").variants() == ["zs_noopt", "fs_noopt"]
    spec = {"seed": 1, "size": {"examples": 400}, "dedup": False,
            "template_types": {"zs_opt": 0.25, "zs_noopt": 0.25, "fs_opt": 0.25, "fs_noopt": 0.25},
            "components": [{"task": "summ"}, {"task": "plain"}]}
    manifest = build(spec, tmp_path / "out", registry_dirs=[str(tmp_path)], progress=False)
    realized = {(t["task"], t["template_type"]): t["realized"] for t in manifest["targets"]}
    assert all(realized.get(("summ", tt), 0) > 30 for tt in ("zs_opt", "zs_noopt", "fs_opt", "fs_noopt")), realized
    assert realized.get(("plain", "zs_opt"), 0) == 0 and realized.get(("plain", "fs_opt"), 0) == 0

"""Helpers shared by test modules: a small generated task registry, verifiable preference files, a corpus."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

from flanmix.preferences import preference_rows
from flanmix.registry import Registry
from flanmix.sources import register_generator


def _pair(rng: random.Random) -> dict:
    return {"a": rng.randint(0, 10**6), "b": rng.randint(0, 10**6)}


register_generator("mixtest.pair", _pair)


def write_task(root: Path, name: str, cluster: str, examples: int, *, options: bool = True, cot: bool = True,
               generator: str = "mixtest.pair", extra: str = "") -> Path:
    """Write one task spec with inline templates (3 zero-shot incl. 1 inverted, 1 CoT when `cot`)."""
    cot_block = (f'  cot:\n    - {{input: "{name} think: {{{{ question }}}}", '
                 f'target: "{{{{ rationale }}}} so {{{{ answer }}}}"}}\n') if cot else ""
    text = textwrap.dedent(f"""\
        name: {name}
        cluster: {cluster}
        source: {{builtin: {generator}, examples: {examples}}}
        fields:
          question: "{{{{ a }}}} + {{{{ b }}}}"
          answer: "{{{{ a + b }}}}"
          rationale: "{{{{ a }}}} plus {{{{ b }}}} is {{{{ a + b }}}}."
          choices: "{{{{ [a + b, a + b + 1, a - b] }}}}"
        {"options_field: choices" if options else ""}
        rationale_field: rationale
        {extra}
        templates:
          zero_shot:
            - {{input: "{name}: what is {{{{ question }}}}?\\n{{{{ options_ }}}}", target: "{{{{ answer }}}}"}}
            - {{input: "{name}: compute {{{{ question }}}}.", target: "{{{{ answer }}}}"}}
            - {{input: "{name}: give two numbers adding to {{{{ answer }}}}", target: "{{{{ question }}}}", inverted: true}}
        """) + cot_block  # noqa: E501 - one template a line, as a task file has them
    path = root / f"{name}.yaml"
    path.write_text(text)
    return path


def make_registry(root: Path, n: int = 6, base: int = 100) -> Registry:
    """`n` tasks t0..t{n-1} (t_i has base*(i+1) rows) in clusters alpha/beta; t0 has no options, t1 no CoT."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_task(root, f"t{i}", ["alpha", "beta"][i % 2], base * (i + 1), options=i != 0, cot=i != 1)
    return Registry.discover([root], bundled=False, env=False, python=False)


# --- preferences over a checkable toy task -------------------------------------------------------------

WORDS = "alpha beta gamma delta red green blue cat dog fox".split()


def reverse_examples(n: int, seed: int = 0, task: str = "reverse") -> list[tuple[str, str]]:
    """(prompt, correct answer) of a checkable toy task: reverse (or copy) a list of words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ws = [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]
        if task == "reverse":
            out.append((f"Reverse the words: {' '.join(ws)}\n", " ".join(reversed(ws))))
        else:
            out.append((f"Copy the words: {' '.join(ws)}\n", " ".join(ws)))
    return out


def write_prefs(path, n=240, kind="pairs", seed=0, k=4, task="reverse", edits="mixed"):
    rows = preference_rows(reverse_examples(n, seed, task), kind=kind, seed=seed, k=k, edits=edits)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


FRUIT_WORDS = ["apple", "stone", "pear", "chair", "plum", "cloud", "fig", "shoe"]


def write_fruit_task(root: Path, templates: dict, *, name: str = "fruit", rows: int = 24, extra: str = "",
                     turns: bool = False) -> Path:
    """A file-sourced yes/no task ("is WORD a fruit?") with the given inline templates in registry folder `root`;
    `turns` adds a dialog column. Returns the spec's path."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    data = [{"word": FRUIT_WORDS[i % len(FRUIT_WORDS)] + str(i), "label": int(i % 3 == 0)} for i in range(rows)]
    if turns:
        for i, row in enumerate(data):
            row["turns"] = [f"hi {i}", "hello {{ x }}  "]
    (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    (root / f"{name}.yaml").write_text(textwrap.dedent(f"""\
        name: {name}
        cluster: fruit
        source: {{files: {name}.jsonl}}
        fields:
          answer: "{{{{ 'yes' if label else 'no' }}}}"
          options: "{{{{ ['yes', 'no'] }}}}"
        options_field: options
        validation_fraction: 0.0
        """) + extra + yaml.safe_dump({"templates": templates}, sort_keys=False))
    return root / f"{name}.yaml"


def niv2_mirror_of_shared(shared_data: Path, root: Path) -> Path:
    """A hub mirror (`root`) holding the natural-instructions task files of ../shared/data, copied in (a mirror's
    files must lie inside it); returns the mirror's tasks folder."""
    import shutil

    tasks = root / "allenai__natural-instructions" / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    for path in (shared_data / "instruction" / "natural_instructions").glob("task*.json"):
        shutil.copy(path, tasks / path.name)
    return tasks


def write_ablation_spec(path: Path, **fields) -> Path:
    """A small ablation spec (held-out logic, task counts 1/2/4, the nano model, 2 steps) with `fields` on top."""
    import yaml

    spec = {"held_out": {"clusters": ["logic"]}, "task_counts": [1, 2, 4], "models": ["nano"], "seeds": [0],
            "budget": {"steps": 2, "batch_size": 2, "max_length": 128}}
    spec.update(fields)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path

"""The study's data: prompts and SFT rows rendered from the task, and rankings of SFT samples by the true reward."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flanmix.core.constants import TARGET_DELIMITER
from flanmix.core.errors import FlanmixError
from flanmix.registry import Registry
from flanmix.study.frontier.spec import FrontierSpec, TaskSettings

RewardFn = Callable[[list, list, list], Sequence[float]]


@dataclass(frozen=True)
class TaskData:
    """What the task gives the study: SFT rows (prompt + reference completion), training and held-out prompts."""

    sft: list[dict]
    train_prompts: list[dict]
    eval_prompts: list[dict]


def registry_dirs(task: TaskSettings, base_dir: Path | None) -> list[Path]:
    """The task's registry folders, relative paths read against the spec file's folder."""
    return [Path(d) if Path(d).is_absolute() or base_dir is None else base_dir / d for d in task.registry]


def task_data(spec: FrontierSpec, base_dir: Path | None) -> TaskData:
    """Render the task's rows with its zero-shot template: `prompt` = inputs, `completion` = delimiter + targets
    (as SFT reads Flan rows), plus the raw row's fields for the reward function."""
    settings = spec.task
    dirs = registry_dirs(settings, base_dir)
    task = Registry.discover(dirs, bundled=not dirs).get(settings.name)
    train, held_out = task.examples("train"), task.examples("validation")
    need = max(settings.sft_rows, settings.train_prompts)
    if len(train) < need or len(held_out) < settings.eval_prompts:
        raise FlanmixError(f"task {settings.name!r} has {len(train)} train / {len(held_out)} validation rows",
                           field="task", expected=f">= {need} train and >= {settings.eval_prompts} validation rows")

    def rows(examples, split: str) -> list[dict]:
        out = []
        for ex in examples:
            r = task.render(ex, template_type="zs_noopt", template_idx=settings.template, seed=spec.seed,
                            split=split)
            out.append({"prompt": r["inputs"], "completion": TARGET_DELIMITER + r["targets"],
                        "example_id": r["example_id"]})
        return out

    sft = rows(train[: settings.sft_rows], "train")
    prompts = rows(train[: settings.train_prompts], "train")
    return TaskData(sft=sft, train_prompts=[{"prompt": r["prompt"], "example_id": r["example_id"]} for r in prompts],
                    eval_prompts=[{"prompt": r["prompt"], "example_id": r["example_id"]}
                                  for r in rows(held_out[: settings.eval_prompts], "validation")])


def rankings(prompts: Sequence[dict], samples: Sequence[Sequence[str]], reward: RewardFn) -> list[dict]:
    """One ranking row per prompt: its distinct non-empty samples with their true rewards; prompts whose samples
    all tie (or fewer than two remain) give no row."""
    out = []
    for row, texts in zip(prompts, samples):
        seen: list[str] = []
        for t in texts:
            if t.strip() and t not in seen:
                seen.append(t)
        if len(seen) < 2:
            continue
        scores = [float(s) for s in reward([row["prompt"]] * len(seen), seen, [row] * len(seen))]
        if len(set(scores)) > 1:
            out.append({"prompt": row["prompt"], "responses": seen, "scores": scores})
    if not out:
        raise FlanmixError("every prompt's SFT samples tied on the reward: no preference data",
                           field="preferences.samples", expected="more samples or a reward that separates them")
    return out

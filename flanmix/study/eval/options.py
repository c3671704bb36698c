"""`EvalOptions`: every setting of an evaluation run, in one object.

`flanmix eval` builds it from its flags, an ablation's `eval:` section extends it, `build_eval_sets` and `evaluate`
take it, and the results JSON records it as `settings`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from flanmix.core.constants import TemplateType
from flanmix.core.strict import Strict
from flanmix.spec import METRICS

Split = Literal["validation", "train", "test"]
MmluChoices = Literal["letters", "text"]


class EvalOptions(Strict):
    """How to evaluate: which rows and prompts, which metrics, and how to run the model."""

    # The first fields are the ones the results JSON has always recorded, in that order.
    split: Split = Field("validation", description="held-out rows of registered tasks; MMLU val/ or test/")
    variant: TemplateType = Field("zs_opt", description="template type for registered tasks (*_opt falls back to "
                                                        "*_noopt for tasks without options)")
    limit: int | None = Field(None, ge=1, description="at most N examples per task (None: all)")
    seed: int = Field(0, description="render seed (few-shot exemplars)")
    template_idx: int | None = Field(None, description="one fixed zero-shot template (None: cycle through the "
                                                          "non-inverted ones)")
    batch_size: int = Field(32, ge=1, description="generation batch size (scoring uses 2x)")
    max_new_tokens: int | None = Field(None, ge=1, description="generation budget (None: longest reference "
                                                                  "+ 8, at most 64; 256 for CoT)")
    bbh_cot: bool = Field(False, description="BBH with chain-of-thought exemplars and answer extraction")
    bbh_shots: int = Field(3, ge=0, description="BBH exemplars from cot-prompts/")
    mmlu_shots: int = Field(0, ge=0, description="MMLU exemplars from dev/")
    mmlu_choices: MmluChoices = Field("letters", description="rank the letters A-D or the choice texts")
    include_eos: bool | None = Field(None, description="score EOS after each ranked option (None: yes for flanmix's "
                                                       "own tasks, no for MMLU, BBH and BIG-bench, as lm-eval)")
    metrics: list[str] | None = Field(None, description="only these metrics (None: each task's own)")
    mmlu_choice_prefix: str = Field(" ", description="text before each MMLU option (the standard leading space)")
    threads: int | None = Field(None, ge=1, description="torch threads (None: 1 for models under 20M params)")
    samples: int = Field(3, ge=0, description="example predictions per task in the results")
    full_samples: bool = Field(False, description="every item in the results, full prompts, unrounded scores")
    registry_dirs: list[str] = Field(default_factory=list, description="extra task registry folders")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str] | None) -> list[str] | None:
        return check_metrics(value)


def check_metrics(value: list[str] | None) -> list[str] | None:
    """`value` if every name is a known metric; else a ValueError naming the first unknown one."""
    bad = [m for m in value or () if m not in METRICS]
    if bad:
        raise ValueError(f"unknown metric {bad[0]!r} (expected {' | '.join(METRICS)})")
    return value

"""Vocabularies shared by several layers, defined once."""

from __future__ import annotations

from typing import Literal, get_args

#: The four Flan template types: zero/few-shot × with/without an options block.
TemplateType = Literal["zs_opt", "zs_noopt", "fs_opt", "fs_noopt"]
TEMPLATE_TYPES: tuple[str, ...] = get_args(TemplateType)

#: Training stages, in pipeline order. `trainers.stages` maps each to its implementation.
StageName = Literal["sft", "rm", "dpo", "rrhf", "ppo"]
STAGE_NAMES: tuple[str, ...] = get_args(StageName)

#: Flan rows train (and are scored) as inputs + TARGET_DELIMITER + targets: few-shot answers then tokenize like the
#: exemplars' answers inside the prompt.
TARGET_DELIMITER = " "

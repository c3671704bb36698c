"""Preference data (no torch): the row schema, third-party importers, file I/O and verifiable generation.

`trainers.preference` tokenizes and collates these `Group`s for the RM, DPO and RRHF stages.
"""

from flanmix.preferences.generate import preference_rows, rows_from_tasks
from flanmix.preferences.importers import IMPORTERS, detect_format, hh_rlhf_rows, pandalm_rows, sharegpt_rows
from flanmix.preferences.io import load_preferences, read_rows, split_groups, write_rows
from flanmix.preferences.schema import Group, is_messages, response_text, row_to_group

__all__ = [
    "IMPORTERS", "Group", "detect_format", "hh_rlhf_rows", "is_messages", "load_preferences", "pandalm_rows",
    "preference_rows", "read_rows", "response_text", "row_to_group", "rows_from_tasks", "sharegpt_rows",
    "split_groups", "write_rows",
]

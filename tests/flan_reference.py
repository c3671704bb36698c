"""FLAN's rendering rules, written independently for the golden tests (test_flan_render and the catalog tests):
the substitution of `{name}` fields, the deterministic options block, the few-shot formula, and FLAN's NIv2 rows and
NIv2 x_shot prompts."""

from __future__ import annotations

import re

ASCII_WS = " \t\n\r\x0b\x0c"  # what TF's strings.strip removes (Python's str.strip would remove more)


def flan_format(template: str, features: dict) -> str:
    """FLAN's `format_from_feature_dictionary`: split on `({\\w*})`, substitute `{name}`, keep the rest."""
    parts = [p for p in re.split(r"({\w*})", template) if p]
    return "".join(str(features[p[1:-1]]) if p[0] == "{" and p[-1] == "}" else p for p in parts)


def options_block(options: list[str]) -> str:
    """FLAN's `format_options` (deterministic)."""
    return "OPTIONS:\n- " + "\n- ".join(options)


def flan_fewshot(pattern, row: dict, shots: list[tuple], separator: str | None = None) -> tuple[str, str]:
    """FLAN's x_shot / template_mix formula: exemplars with their glue, the row's part, placed into the pattern's
    input_pattern (NIv2's names `{{Definition}}`); trailing spaces off the input (RE2's `$`: end of text only), the
    target stripped of ASCII whitespace."""
    text = ""
    for shot_pattern, shot_row in shots:
        end = shot_pattern.example_separator if separator is None else separator
        text += (shot_pattern.inputs_prefix + flan_format(shot_pattern.inputs, shot_row) + shot_pattern.x_y_delimiter
                 + shot_pattern.targets_prefix + flan_format(shot_pattern.targets, shot_row) + end)
    text += pattern.inputs_prefix + flan_format(pattern.inputs, row) + pattern.x_y_delimiter + pattern.targets_prefix
    final = pattern.input_pattern.replace("{{Definition}}", "{Definition}").replace("{{inputs}}", "{inputs_with_ex}")
    inputs = flan_format(final, {**row, "inputs_with_ex": text, "final_suffix": pattern.final_suffix})
    return re.sub(r" *\Z", "", inputs), flan_format(pattern.targets, row).strip(ASCII_WS)


def flan_niv2(task_json: dict, instance: dict) -> dict:
    """FLAN's NIv2 row: the TFDS example (definition, input, output) + `lookup_posex_fn` (the task's positive
    example, first of the task file's list)."""
    positive = task_json["Positive Examples"][0]
    return {"Definition": task_json["Definition"][0], "input": instance["input"], "output": instance["output"][0],
            "ex_input": positive["input"], "ex_output": positive["output"],
            "ex_explanation": positive["explanation"]}


def niv2_x_shot(pattern, row: dict, shots: list[dict]) -> tuple[str, str]:
    """FLAN's NIv2 x_shot (`register_niv2_few_shot_task` + `reformat_single_example`): two exemplars of the row's
    task, each `inputs_pattern + targets_pattern`, the row's part, trailing spaces off, then the pattern's
    `input_pattern` with `{{Definition}}` and `{{inputs}}` filled in. FLAN's target is `targets_pattern` as is:
    the output followed by the example separator."""
    inputs_pattern = pattern.inputs_prefix + pattern.inputs + pattern.x_y_delimiter + pattern.targets_prefix
    targets_pattern = pattern.targets + pattern.example_separator
    exemplars = "".join(flan_format(inputs_pattern + targets_pattern, {"input": s["input"], "output": s["output"]})
                        for s in shots)
    with_ex = re.sub(r" *\Z", "", exemplars + flan_format(inputs_pattern, {"input": row["input"]}))
    final = pattern.input_pattern.replace("{{Definition}}", "{Definition}").replace("{{inputs}}", "{inputs_with_ex}")
    return (flan_format(final, {**row, "inputs_with_ex": with_ex, "final_suffix": ""}),
            flan_format(targets_pattern, row))

"""A Flan row is trained as inputs + " " + targets, and evaluation scores options the same way."""

from __future__ import annotations

from flanmix.eval import task_eval_set
from flanmix.registry import Registry
from trainers.data import TARGET_DELIMITER, row_to_ids, tokenize_prompt_completion


def test_flan_rows_put_the_delimiter_before_the_target(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt, target = "Q: What is 2 + 2?\nA: 4\n\nQ: What is 3 + 4?\nA:", "7"
    flan = row_to_ids(tok, {"inputs": prompt, "targets": target}, "inputs_targets", bos=True)
    assert flan == tokenize_prompt_completion(tok, prompt, TARGET_DELIMITER + target, bos=True)
    # The answer after the final "A:" gets the same tokens as the exemplar's answer after "A:" inside the prompt.
    answer_ids = tok(" 4", add_special_tokens=False)["input_ids"]
    assert answer_ids == tok(TARGET_DELIMITER + "4", add_special_tokens=False)["input_ids"]
    verbatim = row_to_ids(tok, {"prompt": prompt, "completion": target}, "prompt_completion", bos=True)
    assert verbatim == tokenize_prompt_completion(tok, prompt, target, bos=True)


def test_eval_scores_options_after_the_delimiter():
    task = Registry.discover().get("cls_parity")
    eval_set = task_eval_set(task, variant="zs_opt", limit=5, metrics=["rank_classification"])
    assert eval_set.items
    for item in eval_set.items:
        assert all(option.startswith(TARGET_DELIMITER) for option in item.options)
        assert item.options[item.answer_index].strip() == item.reference

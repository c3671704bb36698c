"""A Flan row is trained as inputs + " " + targets, and evaluation scores options the same way."""

from __future__ import annotations

from flanmix.core.constants import TARGET_DELIMITER
from flanmix.registry import Registry
from flanmix.study.eval import task_eval_set
from trainers.data import IGNORE, row_to_ids
from trainers.models import load_tokenizer


def _contains(seq: list[int], part: list[int]) -> bool:
    return any(seq[i:i + len(part)] == part for i in range(len(seq) - len(part) + 1))


def test_flan_rows_train_the_answer_as_it_appears_in_exemplars(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    prompt, target = "Q: What is 2 + 2?\nA: 4\n\nQ: What is 3 + 4?\nA:", "7"
    ids, labels = row_to_ids(tok, {"inputs": prompt, "targets": target}, "inputs_targets", bos=True)
    trained = [t for t in labels if t != IGNORE]
    assert trained[-1] == tok.eos_token_id
    assert ids[: len(ids) - len(trained)] == tok(prompt)["input_ids"]  # the prompt as inference tokenizes it
    # The trained answer is exactly the tokens the same answer has inside an exemplar ("A: 7"), which a model
    # reading few-shot prompts has seen; the bare target ("7") tokenizes differently.
    exemplar = tok("Q: What is 3 + 4?\nA: 7\n\n", add_special_tokens=False)["input_ids"]
    assert _contains(exemplar, trained[:-1])
    bare = tok(target, add_special_tokens=False)["input_ids"]
    assert bare != trained[:-1] and not _contains(exemplar, bare)
    # prompt/completion rows are taken verbatim: no delimiter is added
    _, verbatim = row_to_ids(tok, {"prompt": prompt, "completion": target}, "prompt_completion", bos=True)
    assert [t for t in verbatim if t != IGNORE][:-1] == bare


def test_eval_scores_options_after_the_delimiter():
    task = Registry.discover().get("cls_parity")
    eval_set = task_eval_set(task, variant="zs_opt", limit=5, metrics=["rank_classification"])
    assert eval_set.items
    for item in eval_set.items:
        assert all(option.startswith(TARGET_DELIMITER) for option in item.options)
        assert item.options[item.answer_index].strip() == item.reference

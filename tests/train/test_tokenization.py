"""One rule for joining a prompt and a completion: every stage gives a (prompt, completion) pair the same token ids."""

from __future__ import annotations

import json

import pytest

from trainers import dpo, ppo, rm, rrhf
from trainers.data import IGNORE, prompt_completion_ids, prompt_ids
from trainers.models import load_tokenizer
from trainers.sft import SFTConfig, SFTStage

PAIRS = [
    ("Reverse the words: red cat\n", "cat red"),
    # BPE merges "1" + "2" into one token when prompt and completion are tokenized together; the prompt's ids must
    # still be those of the prompt alone, in every stage
    ("Question: What is 3 + 9?\nAnswer: 1", "2"),
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("prompt, completion", PAIRS)
def test_every_stage_tokenizes_a_pair_the_same_way(tmp_path, tiny_model_dir, prompt, completion):
    tok = load_tokenizer(tiny_model_dir)
    p_ids, c_ids = prompt_completion_ids(tok, prompt, completion)
    assert p_ids == tok(prompt)["input_ids"] and c_ids[-1] == tok.eos_token_id
    expected = p_ids + c_ids
    common = {"model": str(tiny_model_dir), "output_dir": str(tmp_path / "run"), "max_length": 64}

    sft = SFTStage(SFTConfig(**common, data=_write(tmp_path / "sft.jsonl", [{"prompt": prompt,
                                                                              "completion": completion}])),
                   verbose=False)
    example = sft.items[0]
    assert example["input_ids"] == expected
    assert example["labels"] == [IGNORE] * len(p_ids) + c_ids

    prefs = _write(tmp_path / "prefs.jsonl", [{"prompt": prompt, "chosen": completion, "rejected": "dog fox"}])
    stages = {"rm": rm.build_stage(rm.RMConfig(**common, data=prefs, eval_fraction=0)),
              "dpo": dpo.build_stage(dpo.DPOConfig(**common, data=prefs, eval_fraction=0)),
              "rrhf": rrhf.build_stage(rrhf.RRHFConfig(**common, data=prefs, eval_fraction=0))}
    for name, stage in stages.items():
        group = stage.train_groups[0]
        assert group.prompt_ids + group.responses_ids[0] == expected, name
        batch = stage.collate([group])  # and the stage's batch holds them
        assert batch["input_ids"].flatten().tolist()[: len(expected)] == expected, name

    ptx = _write(tmp_path / "ptx.jsonl", [{"prompt": prompt, "completion": completion}])
    cfg = ppo.PPOConfig(**common, data=ptx, ptx_data=ptx, ptx_coef=0.1, max_steps=1)
    stage = ppo.build_stage(cfg, reward_fn=lambda prompts, completions: [0.0] * len(prompts))
    assert stage.prompt_ids[0] == prompt_ids(tok, prompt) == p_ids  # what the actor generates after
    assert list(stage.ptx_data[0][0]) + list(stage.ptx_data[0][1]) == expected  # the pretraining-mix rows

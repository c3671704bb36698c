"""Preference data (no torch): row validation, real-data loaders, generated verifiable preferences, the CLI.

Tokenization and collation of preference groups are tested in tests/train/test_preference_batches.py.
"""

from __future__ import annotations

import json

import pytest

from flanmix.cli import main
from flanmix.core.errors import FlanmixError
from flanmix.preferences import (
    detect_format,
    hh_rlhf_rows,
    load_preferences,
    pandalm_rows,
    preference_rows,
    row_to_group,
    sharegpt_rows,
)
from flanmix.preferences.generate import distance, levenshtein


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flanmix: error:"), err
    return err[0]


@pytest.mark.parametrize("row, msg", [
    ({"prompt": "p", "chosen": "same", "rejected": " same "}, "identical"),
    ({"prompt": "p", "chosen": "", "rejected": "x"}, "empty response"),
    ({"prompt": "p", "chosen": "x", "rejected": [{"role": "assistant", "content": "  "}]}, "empty response"),
    ({"prompt": "p", "responses": ["a", "b", "c"], "scores": [1, 1, 1]}, "all scores are equal"),
    ({"prompt": "p", "responses": ["a", "b"], "scores": [1]}, "as long as responses"),
    ({"prompt": "p", "chosen": "x"}, "both"),
    ({"chosen": "x", "rejected": "y"}, "missing prompt"),
])
def test_bad_rows_raise_one_line_errors(row, msg):
    with pytest.raises(FlanmixError, match=msg) as info:
        row_to_group(row, "f.jsonl:3")
    assert "\n" not in str(info.value) and "f.jsonl:3" in str(info.value)


def test_pairs_and_rankings_normalise_to_groups():
    g = row_to_group({"prompt": "p", "chosen": "a", "rejected": "b", "margin": 0.5})
    assert g.responses == ["a", "b"] and g.pairs() == [(0, 1)] and g.margin == 0.5
    r = row_to_group({"prompt": "p", "responses": ["a", "b", "c"], "scores": [0.0, 2.0, 0.0]})
    assert sorted(r.pairs()) == [(1, 0), (1, 2)]  # the tie (a, c) gives no pair
    chat = row_to_group({"messages": [{"role": "user", "content": "hi"}],
                         "chosen": {"role": "assistant", "content": "hello"}, "rejected": "go away"})
    assert chat.responses[0] == [{"role": "assistant", "content": "hello"}]


def test_real_preference_sets(shared_data, tmp_path, capsys):
    pref = shared_data / "preference"
    hh, dropped = hh_rlhf_rows(pref / "hh_rlhf" / "harmless-base_test.jsonl.gz")
    assert len(hh) + dropped == 2312 and len(hh) > 2250
    assert all(r["prompt"].endswith("\n\nAssistant:") and r["prompt"].startswith("\n\nHuman:") for r in hh)
    assert all("\n\nAssistant:" not in r["chosen"] and r["chosen"].strip() != r["rejected"].strip() for r in hh)
    panda, _ = pandalm_rows(pref / "pandalm" / "testset-v1.json")
    # 794 rows are unanimous and not a tie; 50 of them pair a response with an empty one and are dropped
    assert len(panda) == 744
    share, _ = sharegpt_rows(pref / "llama_factory" / "dpo_en_demo.json")
    assert len(share) == 300 and share[0]["prompt"][0]["role"] == "user"
    assert detect_format(pref / "hh_rlhf" / "harmless-base_test.jsonl.gz") == "hh-rlhf"
    assert detect_format(pref / "pandalm" / "testset-v1.json") == "pandalm"
    assert detect_format(pref / "llama_factory" / "dpo_en_demo.json") == "sharegpt"
    assert len(load_preferences(pref / "pandalm" / "testset-v1.json")) == 744  # loads the raw file directly
    out = tmp_path / "hh.jsonl"
    assert main(["prefs", "import", "hh-rlhf", str(pref / "hh_rlhf" / "harmless-base_test.jsonl.gz"),
                 "--out", str(out)]) == 0
    assert len(load_preferences(out)) == len(hh)
    assert main(["prefs", "import", "pandalm", str(pref / "hh_rlhf" / "harmless-base_test.jsonl.gz"),
                 "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "not a pandalm file" in _err(capsys)


def test_verifiable_preferences_are_deterministic_and_ranked():
    ex = [("What is 3 + 4? ", "7"), ("Reverse 'horse'. ", "esroh"), ("Sort 3, 1, 2 ", "1, 2, 3")]
    a = preference_rows(ex, kind="pairs", seed=1, margin=True)
    assert a == preference_rows(ex, kind="pairs", seed=1, margin=True)
    for row, (_, ans) in zip(a, ex):
        assert row["chosen"] == ans and row["rejected"] != ans and row["margin"] > 0
        row_to_group(row)
    ranks = preference_rows(ex, kind="rankings", k=4, seed=0)
    for row, (_, ans) in zip(ranks, ex):
        assert len(set(row["scores"])) == len(row["scores"]) and max(row["scores"]) == 0.0
        best = row["responses"][row["scores"].index(0.0)]
        assert best == ans
        for resp, s in zip(row["responses"], row["scores"]):
            assert s == -distance(ans, resp)
    assert levenshtein("kitten", "sitting") == 3 and distance("10", "7") == 3.0


def test_prefs_generate_cli(tmp_path, capsys):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"inputs": f"Reverse the word '{w}'.", "targets": w[::-1]}) + "\n"
                           for w in ["horse", "apple", "table", "cloud"]))
    out = tmp_path / "p.jsonl"
    assert main(["prefs", "generate", "--from", str(src), "--kind", "rankings", "--k", "3", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["responses"]) == 3 for r in rows)
    out2 = tmp_path / "t.jsonl"
    assert main(["prefs", "generate", "--tasks", "str_reverse", "list_sort", "--n", "5", "--out", str(out2)]) == 0
    rows = [json.loads(x) for x in out2.read_text().splitlines()]
    assert len(rows) == 10 and len(load_preferences(out2)) == 10
    capsys.readouterr()
    assert main(["prefs", "generate", "--tasks", "no_such_task", "--out", str(out2)]) == 2
    assert "no_such_task" in _err(capsys)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "a"}\n')
    with pytest.raises(FlanmixError, match=r"bad.jsonl:1.*identical"):
        load_preferences(bad)


def test_task_examples_take_template_indices_of_the_variant_they_render(tmp_path):
    """A set whose few-shot pattern list is shorter than its zero-shot list: fs rows cycle over the patterns."""
    from flanmix.preferences.generate import task_examples
    from helpers import write_task

    path = write_task(tmp_path, "fsq", "alpha", 40, cot=False, extra="few_shot_k: 1")
    pattern = '    - {input: "sum {{ question }}", target: "{{ answer }}"}\n'
    text = path.read_text().replace("templates:\n  zero_shot:",
                                    "templates:\n  few_shot_patterns:\n" + pattern + "  zero_shot:")
    path.write_text(text)
    rows = task_examples(["fsq"], n=6, template_type="fs_noopt", extra_dirs=[str(tmp_path)])
    assert len(rows) == 6
    assert all("sum " in inputs for inputs, _ in rows)

"""Evaluation: scoring equals brute force, batching changes nothing, the CoT extractor, BBH/MMLU loaders, the CLI
end to end, a perfect-model anchor and a chance-level anchor."""

from __future__ import annotations

import json

import pytest

from flanmix.core.errors import FlanmixError
from flanmix.study.eval import (
    EvalItem,
    EvalOptions,
    aggregate,
    answers_match,
    build_eval_sets,
    evaluate,
    extract_answer,
    item_metrics,
    normalize,
)
from flanmix.study.eval.benchmarks import (
    bbh_eval_sets,
    bigbench_eval_sets,
    load_bbh,
    load_bbh_cot_prompt,
    load_mmlu_csv,
    mmlu_eval_sets,
)
from flanmix.study.eval.scorer import (
    ModelScorer,
    encode_option,
    generate_greedy,
    load_model,
    option_logprobs,
    prompt_ids,
)
from trainers.data import tokenize_prompt_completion

# ------------------------------------------------------------------------------------------------ model fixtures

@pytest.fixture(scope="module")
def model_tok(tiny_model_dir):
    return load_model(tiny_model_dir)


PROMPTS = ["What is 1 + 2?", "Reverse the words: red green blue cat dog fox\n", "a",
           "Question: What is 12 + 345?\nAnswer:", "Q: the list [3, 1, 2] sorted is\nA:"]
OPTIONS = [["3", "4", "12 + 345"], ["cat", "dog fox red blue"], ["b", "c", "bb", "a b c d e f"],
           ["357", "358", "1", "-10"], ["[1, 2, 3]", "[3, 2, 1]"]]


def _brute_force(model, tokenizer, prompt: str, option: str) -> tuple[float, int]:
    """One unbatched, unpadded forward over prompt+option; sum of the option tokens' log-probs."""
    import torch


    ids, n_prompt = encode_option(tokenizer, prompt, option)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    total = sum(float(logp[t - 1, ids[t]]) for t in range(n_prompt, len(ids)))
    return total, len(ids) - n_prompt


def test_option_logprobs_equal_brute_force_for_any_batching(model_tok):
    model, tok = model_tok
    expected = [[_brute_force(model, tok, p, o) for o in opts] for p, opts in zip(PROMPTS, OPTIONS)]
    for batch_size, max_tokens in ((1, 65536), (3, 65536), (64, 65536), (64, 40)):
        got = option_logprobs(model, tok, PROMPTS, OPTIONS, batch_size=batch_size, max_batch_tokens=max_tokens)
        for exp_row, got_row in zip(expected, got):
            assert [s.tokens for s in got_row] == [n for _, n in exp_row]
            for (lp, _), score in zip(exp_row, got_row):
                assert abs(score.logprob - lp) < 1e-5, (batch_size, score.logprob, lp)


def test_option_scores_include_eos_and_match_training_tokenization(model_tok):
    model, tok = model_tok
    ids, n_prompt = encode_option(tok, PROMPTS[0], "3")
    train_ids, labels = tokenize_prompt_completion(tok, PROMPTS[0], "3")
    assert ids == train_ids and ids[-1] == tok.eos_token_id
    assert all(lab == -100 for lab in labels[:n_prompt]) and labels[n_prompt:] == ids[n_prompt:]
    with_eos = option_logprobs(model, tok, PROMPTS[:1], OPTIONS[:1])[0]
    without = option_logprobs(model, tok, PROMPTS[:1], OPTIONS[:1], include_eos=False)[0]
    assert [a.tokens - 1 for a in with_eos] == [b.tokens for b in without]


def test_generation_batched_equals_unbatched_and_hf_greedy(model_tok):
    import torch


    model, tok = model_tok
    batched = generate_greedy(model, tok, PROMPTS, max_new_tokens=10, batch_size=8)
    single = [generate_greedy(model, tok, [p], max_new_tokens=10)[0] for p in PROMPTS]
    assert batched == single
    # Our KV-cache loop agrees with transformers' own greedy decoding on an unpadded prompt.
    ids = torch.tensor([prompt_ids(tok, PROMPTS[3])])
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    expected = tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
    assert batched[3] == expected


def test_generation_stops_at_stop_strings(model_tok):
    model, tok = model_tok
    free = generate_greedy(model, tok, PROMPTS, max_new_tokens=12)
    k = next(i for i, text in enumerate(free) if len(text) >= 4)
    stop = free[k][2:4]
    cut = generate_greedy(model, tok, PROMPTS, max_new_tokens=12, stop=[[stop] if i == k else [] for i in
                                                                         range(len(PROMPTS))])
    assert cut[k] == free[k][:free[k].find(stop)]
    assert [c for i, c in enumerate(cut) if i != k] == [f for i, f in enumerate(free) if i != k]


# ------------------------------------------------------------------------------------------ answers and metrics

@pytest.mark.parametrize("text, answer", [
    ("2 + 44 = 46. So the answer is 46.", "46"),
    ("Let's think. The answer is (B).", "(B)"),
    ("blah. So the answer is ] } ].", "] } ]"),
    ("x = 3.5 so the answer is 3.5.", "3.5"),
    ("So the answer is 46. Let me double check: yes.", "46"),
    ("Therefore, the final answer is: yes", "yes"),
    ("So the answer is -50.", "-50"),
    ("The answer is **valid**.", "valid"),
    ("The answer is 7. Wait, no. So the answer is 8.", "8"),
    ("He pays 3 * 4 = 12 dollars.\n#### 12", "12"),
    ("Reasoning...\nAnswer: False", "False"),
    ("We had 1,234 apples, then $5 and later 1,250", "1250"),
    ("Ones: 0 - 0 = 0. Tens: 2 - 1 = 1. So 20 - 10 = 10.", "10"),
    ("Smallest is 3. The sorted list is 3, 8, 10, 18.", "3, 8, 10, 18"),
    ("no number here\nlast line", "last line"),
    ("the answer is \\boxed{42}", "42"),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_extract_answer_falls_back_to_the_last_option_mentioned():
    assert extract_answer("I think it is cat, no, dog", ["cat", "dog", "fox"]) == "dog"
    assert extract_answer("(C) looks right", ["x", "y", "z"]) == "z"


def test_answers_match_and_normalize():
    assert normalize("  The  Cat.\n") == "the cat"
    assert answers_match("(B)", "B") and answers_match("b)", "(B)") and not answers_match("(B)", "(C)")
    assert answers_match("46.0", "46") and answers_match("1,234", "1234") and not answers_match("46", "47")
    assert answers_match(" Yes ", "yes") and not answers_match("yes", "no")
    assert not answers_match("a", "the")  # letter rule needs a parenthesis on one side


def test_item_metrics_with_injected_predictions():
    item = EvalItem("p", "Yes", ("exact_match", "rank_classification"), ["No", "Yes"], 1)
    assert item_metrics(item, "Yes", [(-3.0, 2), (-1.0, 2)]) == {
        "exact_match": 1.0, "exact_match_strict": 1.0, "rank_classification": 1.0, "rank_classification_norm": 1.0}
    got = item_metrics(item, " yes.", [(-1.0, 1), (-1.5, 3)])
    assert got["exact_match"] == 1.0 and got["exact_match_strict"] == 0.0
    # sum prefers option 0, per-token mean prefers option 1
    assert got["rank_classification"] == 0.0 and got["rank_classification_norm"] == 1.0
    cot = EvalItem("p", "46", ("cot_exact_match",), cot=True)
    assert item_metrics(cot, "2 + 44 = 46. So the answer is 46.") == {"cot_exact_match": 1.0}


def test_aggregate_macro_averages():
    sets = build_eval_sets(["arith_add", "arith_sub", "cls_parity"], EvalOptions(limit=4, metrics=["exact_match"]))
    gens = {(si, ii): (it.reference if si != 1 else "wrong") for si, s in enumerate(sets)
            for ii, it in enumerate(s.items)}
    res = aggregate(sets, gens, {})
    assert res["tasks"]["arith_add"]["score"] == 1.0 and res["tasks"]["arith_sub"]["score"] == 0.0
    assert res["clusters"]["arithmetic"]["score"] == 0.5
    assert res["overall"]["score"] == pytest.approx(2 / 3)
    assert res["overall"]["cluster_macro"] == pytest.approx((0.5 + 1.0) / 2)


# ---------------------------------------------------------------------------------------------- BBH and MMLU

def test_bbh_loaders_on_shared_data(shared_data):
    bbh = shared_data / "eval" / "bbh"
    files = sorted(bbh.glob("*.json"))
    assert len(files) == 27
    assert sum(len(load_bbh(f)) for f in files) == 6511
    for f in files:
        description, shots = load_bbh_cot_prompt(bbh / "cot-prompts" / f"{f.stem}.txt")
        assert description and len(shots) == 3
        for question, rationale, answer in shots:
            assert question and "answer is" in rationale and answer
            assert "BENCHMARK DATA" not in question
    _, shots = load_bbh_cot_prompt(bbh / "cot-prompts" / "date_understanding.txt")
    assert [a for _, _, a in shots] == ["(D)", "(B)", "(B)"]

    direct = bbh_eval_sets(str(bbh / "boolean_expressions.json"), limit=5)[0]
    assert direct.name == "bbh.boolean_expressions" and len(direct.items) == 5
    prompt = direct.items[0].prompt
    assert prompt.count("Q: ") == 4 and prompt.endswith("\nA:") and "A: False\n\nQ:" in prompt
    assert direct.items[0].reference == "False" and direct.items[0].stop == ("\n",)
    cot = bbh_eval_sets(str(bbh), cot=True, limit=2)
    assert len(cot) == 27 and all(s.primary == "cot_exact_match" for s in cot)
    assert cot[0].items[0].prompt.endswith("A: Let's think step by step.")
    zero = bbh_eval_sets(str(bbh / "navigate.json"), shots=0, limit=1)[0]
    assert zero.items[0].prompt.startswith("Q: ")


def test_mmlu_loaders_on_shared_data(shared_data):
    mmlu = shared_data / "eval" / "mmlu"
    assert sum(len(load_mmlu_csv(f)) for f in (mmlu / "val").glob("*.csv")) == 180
    assert sum(len(load_mmlu_csv(f)) for f in (mmlu / "test").glob("*.csv")) == 1685
    row = load_mmlu_csv(mmlu / "test" / "abstract_algebra_test.csv")[2]
    assert row["choices"] == ["0", "1", "0,1", "0,4"] and row["answer"] == 3  # quoted commas survive
    sets = mmlu_eval_sets(str(mmlu), split="validation", shots=5)
    assert len(sets) == 10 and sum(len(s.items) for s in sets) == 180
    item = sets[0].items[0]
    assert item.prompt.count("\nAnswer:") == 6 and item.prompt.endswith("D. 6\nAnswer:")
    assert item.options == [" A", " B", " C", " D"] and item.reference == item.options[item.answer_index]
    text = mmlu_eval_sets(str(mmlu / "test" / "anatomy_test.csv"), choices="text", limit=3)[0]
    assert text.name == "mmlu.anatomy" and len(text.items) == 3 and len(text.items[0].options[0]) > 3


def test_bigbench_loader_on_shared_data(shared_data):
    sets = {s.name: s for s in bigbench_eval_sets(str(shared_data / "eval" / "bigbench"))}
    assert len(sets) == 12 and all(s.cluster == "bigbench" for s in sets.values())
    gk = sets["bigbench.general_knowledge"]
    assert gk.primary == "rank_classification" and len(gk.items) == 70
    item = gk.items[0]
    assert item.prompt == ("Q: How many legs do horses have?\n  choice: two\n  choice: four\n  choice: six\n"
                           "  choice: three\n  choice: one\n  choice: none\nA:")
    assert item.options[item.answer_index] == " four"
    assert sets["bigbench.auto_debugging"].primary == "exact_match"
    assert sum(len(s.items) for s in sets.values()) >= 800


# ------------------------------------------------------------------------------------------- anchors and CLI

class OracleScorer:
    """A "perfect model": answers every prompt with its reference (the full CoT target for CoT prompts) and ranks
    the correct option first."""

    def __init__(self, sets, *, wrong: bool = False):
        self.answers = {}
        for s in sets:
            for it in s.items:
                text = it.budget_text or it.reference
                if s.source == "bbh" and it.cot:
                    text = f"Some reasoning. So the answer is {it.reference}."
                self.answers[it.prompt] = (text, it.answer_index)
        self.wrong = wrong

    def generate(self, prompts, *, max_new_tokens, stop):
        return ["zzz" if self.wrong else self.answers[p][0] for p in prompts]

    def rank(self, prompts, options, include_eos=None):
        out = []
        for p, opts in zip(prompts, options):
            # MMLU/BIG-bench prompts reach the scorer with trailing whitespace moved onto the options (lm-eval)
            good = self.answers[p][1] if p in self.answers else self.answers[p + opts[0][:len(opts[0]) - len(
                opts[0].lstrip())]][1]
            out.append([(-1.0 if (k == good) != self.wrong else -5.0, 1) for k in range(len(opts))])
        return out

    def count_tokens(self, text):
        return len(text.split())


def test_perfect_model_scores_one_on_every_bundled_task_and_bbh(shared_data):
    specs = ["*", f"bbh:{shared_data / 'eval' / 'bbh'}", f"bigbench:{shared_data / 'eval' / 'bigbench'}",
             f"mmlu:{shared_data / 'eval' / 'mmlu'}"]
    options = EvalOptions(limit=5, bbh_cot=True)
    sets = build_eval_sets(specs, options)
    clusters = {s.cluster for s in sets}
    assert clusters >= {"arithmetic", "bbh", "mmlu", "bigbench"} and len(clusters) >= 9
    report = evaluate(OracleScorer(sets), specs, options)
    assert report["settings"] == options.model_dump(mode="json")
    for name, task in report["tasks"].items():
        for metric, value in task["metrics"].items():
            assert value == 1.0, (name, metric, task["samples"])
    assert report["overall"]["score"] == 1.0 and report["overall"]["cluster_macro"] == 1.0
    # every CoT-capable bundled task was checked through the extractor
    assert sum("cot_exact_match" in t["metrics"] for t in report["tasks"].values()) >= 20
    wrong = evaluate(OracleScorer(sets, wrong=True), sets)  # prebuilt eval sets are accepted as they are
    assert wrong["overall"]["score"] == 0.0


def test_untrained_model_is_near_chance_on_mmlu(tiny_model_dir, shared_data):
    report = evaluate(tiny_model_dir, [f"mmlu:{shared_data / 'eval' / 'mmlu'}"], EvalOptions(split="validation"))
    acc = report["clusters"]["mmlu"]["score"]
    assert 0.08 < acc < 0.45, acc  # 4 options: chance is 0.25
    assert report["overall"]["n_items"] == 180


def test_cli_end_to_end(tiny_model_dir, tmp_path, capsys):
    from flanmix.cli import main

    out = tmp_path / "res" / "results.json"
    rc = main(["eval", str(tiny_model_dir), "--tasks", "arith_add", "--tasks", "cls_parity", "--limit", "6",
               "--out", str(out), "--batch-size", "4", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "arith_add" in printed and "overall" in printed
    report = json.loads(out.read_text())
    assert set(report["tasks"]) == {"arith_add", "cls_parity"}
    for task in report["tasks"].values():
        assert task["n"] == 6 and task["metrics"]
        assert all(0.0 <= v <= 1.0 for v in task["metrics"].values())
    assert "rank_classification" in report["tasks"]["arith_add"]["metrics"]
    assert set(report["clusters"]) == {"arithmetic", "classification"}
    assert 0.0 <= report["overall"]["score"] <= 1.0
    assert report["timing"]["generation"]["prompts"] > 0


def test_cli_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    from flanmix.cli import main

    assert main(["eval", str(tiny_model_dir), "--tasks", "no_such_task"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown task 'no_such_task'" in err and "\n" not in err
    assert main(["eval", str(tmp_path / "missing"), "--tasks", "arith_add"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model folder not found" in err and "\n" not in err
    assert main(["eval", str(tiny_model_dir), "--tasks", "bbh:/nonexistent/bbh"]) == 2
    assert "BBH path not found" in capsys.readouterr().err
    assert main(["eval", str(tiny_model_dir), "--tasks", "arith_add", "--metrics", "bleu"]) == 2
    assert "metrics: Value error, unknown metric 'bleu'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # a nonsense count is an argparse error (issue 17, point 9)
        main(["eval", str(tiny_model_dir), "--tasks", "arith_add", "--limit", "0"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "--limit: must be at least 1, got 0" in err and "\n" not in err


def test_model_scorer_leaves_threads_and_training_mode_as_it_found_them(model_tok):
    import torch

    model, tok = model_tok
    threads = torch.get_num_threads()
    model.train()
    seen = []
    hook = model.register_forward_pre_hook(lambda module, args: seen.append((torch.get_num_threads(), module.training)))
    try:
        scorer = ModelScorer(model, tok, threads=threads + 1)
        scorer.generate(PROMPTS[:2], max_new_tokens=2, stop=[[], []])
        scorer.rank(PROMPTS[:1], OPTIONS[:1])
    finally:
        hook.remove()
        training = model.training
        model.eval()
    assert seen and set(seen) == {(threads + 1, False)}, "scoring runs in eval mode with the scorer's threads"
    assert torch.get_num_threads() == threads and training, "both go back afterwards"


def test_model_memorising_its_eval_rows_through_sft_scores_one(tiny_model_dir, tmp_path):
    """The model-trick anchor: SFT (trainers.sft, the project's own join of prompt and target) on the very eval
    rows makes the tiny model reproduce them, so eval must read 1.0 -- which it only does if eval tokenizes prompt
    and target exactly as training does."""
    import torch

    from trainers.sft import train

    sets = build_eval_sets(["arith_add", "cls_parity"],
                           EvalOptions(limit=4, metrics=["exact_match", "rank_classification"]))
    rows = [{"inputs": it.prompt, "targets": it.reference} for s in sets for it in s.items]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: a second thread only adds contention
    try:
        result = train({"model": str(tiny_model_dir), "data": str(data), "output_dir": str(tmp_path / "run"),
                        "max_steps": 60, "lr": 5e-3, "batch_size": 8, "warmup_steps": 5, "progress": False,
                        "tensorboard": False})
    finally:
        torch.set_num_threads(threads)
    report = evaluate(result.final_dir, sets)
    for name, task in report["tasks"].items():
        assert task["metrics"]["exact_match_strict"] == 1.0, (name, task["samples"])
        assert task["metrics"]["rank_classification"] == 1.0, name


# --- parity with lm-evaluation-harness (issue 17, point 10)

def _lm_eval_mmlu_requests(csv_path, subject):
    """lm-eval's MMLU (tasks/mmlu/default): description + doc_to_text as context, " " + letter as continuation
    (target_delimiter " "); re-implemented here from its YAML, independently of flanmix's MMLU code."""
    import csv

    description = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    docs = []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            question, *choices, answer = row
            text = (question.strip() + "".join(f"\n{letter}. {c}" for letter, c in zip("ABCD", choices))
                    + "\nAnswer:")
            docs.append((description + text, [" " + letter for letter in "ABCD"], "ABCD".index(answer.strip())))
    return docs


def test_mmlu_log_likelihoods_and_picks_equal_lm_eval_harness(model_tok, shared_data):
    """flanmix's default MMLU scoring against lm-eval's own HFLM.loglikelihood on the same tiny model and the same
    items of ../shared/data: every log-likelihood within 1e-4, the same pick (acc) and acc_norm on every item."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from trainers.data import adds_bos

    model, tok = model_tok
    mmlu = shared_data / "eval" / "mmlu"
    subjects = ["abstract_algebra", "anatomy", "astronomy"]
    report = evaluate((model, tok), [f"mmlu:{mmlu / 'val' / (s + '_val.csv')}" for s in subjects],
                      EvalOptions(limit=8, full_samples=True))
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=8, add_bos_token=adds_bos(tok), device="cpu")
    compared = 0
    for subject in subjects:
        docs = _lm_eval_mmlu_requests(mmlu / "val" / f"{subject}_val.csv", subject)[:8]
        requests = [Instance("loglikelihood", {}, (ctx, cont), idx) for ctx, conts, _ in docs
                    for idx, cont in enumerate(conts)]
        theirs = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
        samples = report["tasks"][f"mmlu.{subject}"]["samples"]
        assert len(samples) == len(docs)
        accs, norms = [], []
        for d, (doc, sample) in enumerate(zip(docs, samples)):
            lls = theirs[4 * d:4 * d + 4]
            assert sample["option_logprobs"] == pytest.approx(lls, abs=1e-4)
            assert sample["prompt"] == doc[0]  # the whole prompt (full_samples)
            pick = max(range(4), key=lambda k: (lls[k], -k))  # lm-eval: np.argmax (first maximum)
            accs.append(float(pick == doc[2]))
            norms.append(float(max(range(4), key=lambda k: (lls[k] / len(doc[1][k].strip()), -k)) == doc[2]))
            compared += 1
        metrics = report["tasks"][f"mmlu.{subject}"]["metrics"]
        assert metrics["rank_classification"] == pytest.approx(sum(accs) / len(accs))
        assert metrics["acc_norm"] == pytest.approx(sum(norms) / len(norms))
    assert compared == 24


def test_trailing_whitespace_of_a_prompt_moves_onto_the_option_as_lm_eval_does():
    from flanmix.study.eval.items import choice_chars, lm_eval_request

    assert lm_eval_request("Answer: ", "A") == ("Answer:", " A")
    assert lm_eval_request("Q:\n A: \n", "yes") == ("Q:\n A:", " \nyes")
    assert lm_eval_request("Answer:", " A") == ("Answer:", " A")
    assert [choice_chars(o) for o in (" A", " four", "x", " ")] == [1, 4, 1, 1]


def test_own_tasks_keep_eos_and_mmlu_drops_it():
    """Which EOS setting each suite's ranked options get (the scorer sees it per call)."""
    from flanmix.study.eval import run_eval_sets
    from flanmix.study.eval.items import EvalItem, EvalSet

    calls = []

    class Recorder:
        def rank(self, prompts, options, include_eos=None):
            calls.append((prompts[0], options[0], include_eos))
            return [[(-1.0, 1)] * len(o) for o in options]

        def generate(self, prompts, *, max_new_tokens, stop):
            return [""] * len(prompts)

        def count_tokens(self, text):
            return 1

    item = EvalItem("Answer: ", " A", ("rank_classification",), [" A", " B"], 0)
    sets = [EvalSet("own", "c", "registry", [item], "rank_classification"),
            EvalSet("mmlu.x", "mmlu", "mmlu", [item], "rank_classification")]
    run_eval_sets(sets, Recorder())
    assert calls == [("Answer: ", [" A", " B"], True), ("Answer:", ["  A", "  B"], False)]
    calls.clear()
    run_eval_sets(sets, Recorder(), include_eos=True)
    assert [c[2] for c in calls] == [True, True]


def test_bigbench_parent_tasks_are_evaluated_through_their_subtasks(tmp_path):
    """bigbench's JsonTask: a task.json without examples is a parent whose sub-folders hold the subtasks."""
    parent = tmp_path / "combos"
    parent.mkdir()
    (parent / "task.json").write_text(json.dumps({"name": "combos", "description": "parent", "keywords": []}))
    for sub, answer in (("contradictions", "no"), ("emergent", "yes")):
        (parent / sub).mkdir()
        (parent / sub / "task.json").write_text(json.dumps({
            "name": f"combos:{sub}",
            "examples": [{"input": f"{sub}?",
                          "target_scores": {"yes": int(answer == "yes"), "no": int(answer == "no")}}],
        }))
    sets = {s.name: s for s in bigbench_eval_sets(str(tmp_path))}
    assert sorted(sets) == ["bigbench.combos:contradictions", "bigbench.combos:emergent"]
    item = sets["bigbench.combos:emergent"].items[0]
    assert item.options[item.answer_index].strip() == "yes" and item.prompt.startswith("Q: emergent?")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "task.json").write_text(json.dumps({"name": "empty"}))
    with pytest.raises(FlanmixError, match=r"empty/task\.json: not a BIG-bench JSON task"):
        bigbench_eval_sets(str(tmp_path / "empty"))

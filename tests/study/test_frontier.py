"""The reward–KL frontier study: the controlled-generation task and its reward, the KL estimator against an exact
sum over every response of a tiny vocabulary, the RPO (DPO + NLL) loss against its equation, and a small seeded
frontier (SFT → PPO and DPO → evaluation → tables and plots) that gives the same table twice and resumes."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import yaml
from pydantic import ValidationError

from flanmix.builtin.steering import LEXICON, NEGATIVE, POSITIVE, review, reward, score
from flanmix.core.errors import FlanmixError
from flanmix.registry import Registry
from flanmix.study.frontier import load_spec
from flanmix.study.frontier.report import ordering
from flanmix.study.frontier.runner import run
from flanmix.study.frontier.sampling import Mean, policy_samples, response_logprobs
from trainers.dpo import batch_dpo_loss, completion_lengths
from trainers.logprobs import batch_sequence_logprobs
from trainers.losses.dpo import dpo_loss

# ------------------------------------------------------------------------------------------------ task and reward


def test_reward_is_the_share_of_positive_sentiment_words():
    assert score("and the room was great, but the bed was awful.") == 0.5
    assert score("and the staff was nice, and the view was lovely.") == 1.0
    assert score("and the bed was fine, and the pool was excellent, and the soup was dull.") == pytest.approx(1 / 3)
    assert score("and the room was there.") == 0.0 and score("") == 0.0
    assert score("GREAT... Great!") == 1.0  # case and punctuation do not matter
    assert reward(["p", "q"], ["great", "bad"], [{}, {}]) == [1.0, 0.0]
    assert set(POSITIVE).isdisjoint(NEGATIVE) and len(LEXICON) == 24


def test_generator_is_seeded_and_mood_tilts_the_reward():
    rows = [review(random.Random(i)) for i in range(400)]
    assert rows[:5] == [review(random.Random(i)) for i in range(5)]
    assert all(r["reward"] == score(r["continuation"]) and r["answer"] == r["continuation"] for r in rows)
    assert all(r["continuation"].startswith(("and ", "but ")) and r["continuation"].endswith(".") for r in rows)
    low = [r["reward"] for r in rows if r["mood"] <= 0.3]
    high = [r["reward"] for r in rows if r["mood"] >= 0.7]
    assert sum(high) / len(high) > sum(low) / len(low) + 0.3
    assert 0.3 < sum(r["reward"] for r in rows) / len(rows) < 0.5  # room to climb for every method


def test_task_renders_from_its_registry(repo_root):
    task = Registry.discover([repo_root / "configs/frontier/registry"]).get("steer_review")
    ex = task.examples("validation")[0]
    row = task.render(ex, template_type="zs_noopt", template_idx=0)
    assert row["inputs"].startswith("Continue this ") and row["inputs"].endswith(ex.raw["opening"])
    assert row["targets"] == ex.raw["continuation"]
    assert "steer_review" not in Registry.discover()  # not in the bundled registry (nor its corpus or mixtures)


# ------------------------------------------------------------------------------------------------ KL estimator


def _tiny_lm(seed: int, vocab: int = 5):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper distributions, so the two models differ by a visible KL
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    return model.eval()


def _all_responses(vocab: int, eos: int, max_new: int) -> list[list[int]]:
    """Every response sampling can make: up to `max_new` tokens, ending at the first EOS or at the limit."""
    others = [t for t in range(vocab) if t != eos]
    out, open_ = [], [[]]
    for _ in range(max_new):
        out += [s + [eos] for s in open_]
        open_ = [s + [t] for s in open_ for t in others]
    return out + open_


def test_kl_estimator_matches_the_exact_sum_on_a_tiny_vocabulary():
    policy, ref = _tiny_lm(0), _tiny_lm(1)
    eos, max_new = 2, 3
    responses = _all_responses(5, eos, max_new)
    assert len(responses) == 1 + 4 + 16 + 64
    for prompt in ([1, 3], [1, 4, 4, 3]):
        lp = response_logprobs(policy, [prompt] * len(responses), responses, pad_id=0)
        lq = response_logprobs(ref, [prompt] * len(responses), responses, pad_id=0)
        assert sum(math.exp(a) for a in lp) == pytest.approx(1.0, abs=1e-5)  # a distribution over responses
        exact = sum(math.exp(a) * (a - b) for a, b in zip(lp, lq))
        est = policy_samples(policy, ref, [prompt], n=3000, max_new_tokens=max_new, eos_id=eos, pad_id=0,
                             seed=0).kl()
        assert exact > 0.3 and est.se < 0.05
        assert abs(est.mean - exact) < 4 * est.se, (est, exact)


def test_sampled_log_probs_do_not_depend_on_padding_or_batching():
    policy, ref = _tiny_lm(0), _tiny_lm(1)
    prompts = [[1, 3], [1, 4, 4, 3, 3], [1]]  # different lengths: left padding in one batch
    s = policy_samples(policy, ref, prompts, n=3, max_new_tokens=4, eos_id=2, pad_id=0, seed=3)
    again = policy_samples(policy, ref, prompts, n=3, max_new_tokens=4, eos_id=2, pad_id=0, seed=3)
    assert s == again  # seeded, global RNG not involved
    for i, resp, a, b in zip(s.prompt_index, s.responses, s.logp, s.ref_logp):
        assert len(resp) <= 4 and (2 not in resp[:-1])
        assert a == pytest.approx(response_logprobs(policy, [prompts[i]], [resp], pad_id=0)[0], abs=1e-5)
        assert b == pytest.approx(response_logprobs(ref, [prompts[i]], [resp], pad_id=0)[0], abs=1e-5)
    same = policy_samples(policy, policy, prompts, n=2, max_new_tokens=4, eos_id=2, pad_id=0, seed=0)
    assert same.kl() == Mean(0.0, 0.0)


# ------------------------------------------------------------------------------------------------ RPO loss


def test_rpo_loss_is_dpo_plus_the_chosen_nll():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6, generator=g) * 5 - 20 for _ in range(4))
    lengths = torch.tensor([3, 7, 1, 12, 5, 2])
    for loss_type, beta, alpha in (("sigmoid", 0.1, 1.0), ("ipo", 0.5, 0.3), ("hinge", 0.2, 2.0)):
        base, _ = dpo_loss(pc, pr, rc, rr, beta, loss_type)
        got, metrics = dpo_loss(pc, pr, rc, rr, beta, loss_type, nll_weight=alpha, chosen_lengths=lengths)
        nll = sum(-float(pc[i]) / int(lengths[i]) for i in range(6)) / 6
        assert float(got) == pytest.approx(float(base) + alpha * nll, rel=1e-6)
        assert metrics["nll/chosen"] == pytest.approx(nll, rel=1e-6)
    h = (pc - rc) - (pr - rr)
    brute = sum(-math.log(1 / (1 + math.exp(-0.1 * float(x)))) for x in h) / 6
    assert float(dpo_loss(pc, pr, rc, rr, 0.1)[0]) == pytest.approx(brute, rel=1e-6)
    with pytest.raises(FlanmixError, match="lengths"):
        dpo_loss(pc, pr, rc, rr, 0.1, nll_weight=1.0)


@pytest.mark.parametrize("shared", [False, True])
def test_rpo_on_a_batch_and_weight_zero_is_plain_dpo_bit_for_bit(tiny_model_dir, tmp_path, shared):
    from flanmix.preferences import load_preferences
    from helpers import write_prefs
    from trainers.models import load_tokenizer
    from trainers.policy import load_policy
    from trainers.preference import collate, collate_shared, encode_groups, pad_id_of

    write_prefs(tmp_path / "p.jsonl", n=12, kind="rankings", k=3)
    tok = load_tokenizer(tiny_model_dir)
    groups = encode_groups(tok, load_preferences(tmp_path / "p.jsonl"), 64)
    batch = (collate_shared if shared else collate)(groups[:4], pad_id_of(tok))
    model = load_policy(tiny_model_dir)
    with torch.no_grad():
        batch["ref_logps"] = batch_sequence_logprobs(model, batch) + 0.25  # any fixed reference

    def loss_and_grads(**kw):
        model.zero_grad()
        loss, _ = batch_dpo_loss(model, batch, 0.1, **kw)
        loss.backward()
        return loss.detach().clone(), [p.grad.clone() for p in model.parameters()]

    plain, g_plain = loss_and_grads()
    zero, g_zero = loss_and_grads(nll_weight=0.0)
    assert torch.equal(plain, zero) and all(torch.equal(a, b) for a, b in zip(g_plain, g_zero))
    rpo, _ = loss_and_grads(nll_weight=0.5)
    with torch.no_grad():
        mean_lp = batch_sequence_logprobs(model, batch, average=True)
        lengths = completion_lengths(batch)
        sums = batch_sequence_logprobs(model, batch)
    assert torch.allclose(sums / lengths, mean_lp, atol=1e-5)  # lengths count each sequence's completion tokens
    expected = float(plain) + 0.5 * float(-mean_lp[batch["pair_chosen"]].mean())
    assert float(rpo) == pytest.approx(expected, rel=1e-5)


def test_dpo_config_takes_the_nll_weight():
    from trainers.dpo import DPOConfig

    assert DPOConfig(model="m", data="d", output_dir="o").nll_weight == 0.0
    assert DPOConfig(model="m", data="d", output_dir="o", nll_weight=1.0).nll_weight == 1.0
    with pytest.raises(ValidationError):
        DPOConfig(model="m", data="d", output_dir="o", nll_weight=-1.0)


# ------------------------------------------------------------------------------------------------ the study


def _spec(path, registry, **over) -> dict:
    # A nano model whose tokenizer is trained on the task's text (the study's default start): its samples contain
    # lexicon words even after a few SFT steps, so the SFT samples can be ranked.
    spec = {
        "name": "tiny", "seed": 0, "threads": 1,
        "task": {"registry": [str(registry)], "sft_rows": 64, "train_prompts": 12, "eval_prompts": 6},
        "model": {"size": "nano", "vocab_size": 400},
        "sft": {"max_steps": 8, "batch_size": 8, "lr": 3.0e-3, "max_length": 64},
        "preferences": {"samples": 3},
        "eval": {"samples": 2, "max_new_tokens": 10, "checkpoints": 2, "temperatures": [0.5, 1.0],
                 "batch_size": 16},
        "runs": [
            {"method": "ppo", "knob": "kl_coef", "values": [0.1],
             "config": {"max_steps": 2, "rollout_batch_size": 4, "mini_batch_size": 4, "lr": 1.0e-4}},
            {"method": "dpo", "knob": "beta", "values": [0.1],
             "config": {"max_steps": 2, "batch_size": 4, "lr": 1.0e-4}},
        ],
        **over,
    }
    path.write_text(yaml.safe_dump(spec))
    return spec


def test_small_frontier_is_seeded_and_resumes(tmp_path, repo_root):
    spec_file = tmp_path / "f.yaml"
    _spec(spec_file, repo_root / "configs/frontier/registry")
    logs: list[str] = []
    first = run(spec_file, tmp_path / "a", log=logs.append)
    out = tmp_path / "a"
    assert first["ran"] == ["ppo-kl_coef-0.1", "dpo-beta-0.1"] and not first["skipped"]
    for name in ("results.csv", "results.jsonl", "results.md", "frontier.png", "winrate.png", "timings.json"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["run"] for r in rows] == ["sft", "ppo-kl_coef-0.1", "dpo-beta-0.1"]
    assert rows[0]["points"] == [{**rows[0]["points"][0], "step": 0, "kl": 0.0, "kl_se": 0.0}]
    for r in rows[1:]:
        assert [p["step"] for p in r["points"]] == [1, 2]  # both checkpoints evaluated
        assert set(r["win_rates"]) == {"0.5", "1"} and all(0 <= w <= 1 for w in r["win_rates"].values())
        assert all(0 <= p["reward"] <= 1 and math.isfinite(p["kl"]) for p in r["points"])
        assert not (out / "runs" / r["run"] / "train" / "checkpoints").exists()  # weights dropped after eval
    prefs = [json.loads(line) for line in (out / "data/preferences.jsonl").read_text().splitlines()]
    assert prefs and all(len(set(p["scores"])) > 1 and len(p["responses"]) >= 2 for p in prefs)
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("run,method,knob,value,step,reward,reward_se,kl,kl_se")
    assert len(csv_lines) == 1 + 1 + 2 + 2

    again = run(spec_file, out, log=logs.append)  # resume: nothing left to do
    assert again["ran"] == [] and again["skipped"] == ["ppo-kl_coef-0.1", "dpo-beta-0.1"]

    second = run(spec_file, tmp_path / "b", log=logs.append)  # a fresh folder: the same table
    assert second["ran"] == first["ran"]
    for name in ("results.csv", "results.jsonl", "results.md"):
        assert (tmp_path / "b" / name).read_text() == (out / name).read_text(), name


def test_ray_engine_gives_the_local_table(tmp_path, repo_root, ray_cluster):
    from flanmix.cli import main

    spec_file = tmp_path / "f.yaml"
    _spec(spec_file, repo_root / "configs/frontier/registry")
    local = run(spec_file, tmp_path / "local", log=lambda m: None)
    assert main(["study", "frontier", str(spec_file), "--out", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    for name in ("results.csv", "results.md"):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text(), name
    again = run(spec_file, tmp_path / "ray", engine="ray", log=lambda m: None)
    assert again["ran"] == [] and sorted(again["skipped"]) == sorted(local["ran"])


def test_changed_run_settings_retrain_only_that_run(tmp_path, repo_root):
    spec_file = tmp_path / "f.yaml"
    spec = _spec(spec_file, repo_root / "configs/frontier/registry")
    spec["runs"] = spec["runs"][1:]
    spec_file.write_text(yaml.safe_dump(spec))
    run(spec_file, tmp_path / "o", log=lambda m: None)
    spec["runs"][0]["config"]["lr"] = 2.0e-4
    spec["runs"][0]["values"] = [0.1, 0.5]
    spec_file.write_text(yaml.safe_dump(spec))
    result = run(spec_file, tmp_path / "o", log=lambda m: None)
    assert result["ran"] == ["dpo-beta-0.1", "dpo-beta-0.5"]
    spec["sft"]["max_steps"] = 4
    spec_file.write_text(yaml.safe_dump(spec))
    with pytest.raises(FlanmixError, match="another task, model, SFT"):
        run(spec_file, tmp_path / "o", log=lambda m: None)


def test_ordering_check_reads_the_knob_direction():
    spec_data = {"runs": [{"method": "ppo", "knob": "kl_coef", "values": [0.2, 0.05],
                           "config": {"max_steps": 3}}], "eval": {"checkpoints": 3}}
    from flanmix.study.frontier.spec import FrontierSpec

    spec = FrontierSpec.model_validate(spec_data)
    rows = [{"method": "ppo", "knob": "kl_coef", "value": v, "points": [{"kl": kl, "reward": r}]}
            for v, kl, r in ((0.2, 0.5, 0.6), (0.05, 2.0, 0.9))]
    (check,) = ordering(spec, rows)
    assert check["values"] == [0.2, 0.05] and check["kl_rises"] and check["reward_rises"]


@pytest.mark.parametrize("bad, message", [
    ({"runs": [{"method": "dpo", "knob": "beta", "values": [0.1], "config": {"max_steps": 4, "data": "x"}}]},
     "set by the frontier study"),
    ({"runs": [{"method": "dpo", "knob": "beta", "values": [0.1], "config": {"max_steps": 4, "betta": 1}}]},
     "betta"),
    ({"runs": [{"method": "dpo", "knob": "beta", "values": [0.1], "config": {"max_steps": 5}}]},
     "multiple of"),
    ({"runs": [{"method": "dpo", "knob": "beta", "values": [0.1], "config": {"beta": 0.2, "max_steps": 4}}]},
     "swept knob"),
    ({"sft": {"output_dir": "x"}, "runs": []}, "set by the frontier study|runs"),
])
def test_spec_errors_name_the_field(tmp_path, bad, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"eval": {"checkpoints": 2}, **bad}))
    with pytest.raises(FlanmixError, match=message):
        load_spec(path)


def test_bundled_spec_is_valid(repo_root):
    spec, _ = load_spec(repo_root / "configs/frontier/demo.yaml")
    assert {s.method for s in spec.runs} == {"ppo", "dpo", "ipo", "rrhf"}
    assert all(len(s.values) >= 3 for s in spec.runs)

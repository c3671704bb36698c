"""PPO: GAE and losses vs brute-force loops, learning under a programmatic reward, exact resume, bad input."""

from __future__ import annotations

import json
import math
import random
import shutil

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from flanmix.cli import main
from flanmix.core.errors import FlanmixError
from trainers.init_model import init_model
from trainers.logprobs import token_logprobs
from trainers.losses.ppo import compute_gae, kl_shaped_rewards, policy_loss, value_loss
from trainers.policy import load_policy
from trainers.ppo import PPOConfig, action_logprobs, build_stage, position_ids_from_mask, train
from trainers.rewards import new_reward_model
from trainers.sft import train as sft_train


def digit_reward(prompts, completions):
    """Share of the completion's characters that are digits (the warm-up model answers in words or numbers)."""
    return [sum(ch.isdigit() for ch in c) / max(len(c.strip()), 1) for c in completions]


def _random_span_mask(N, L, gen):
    mask = torch.zeros(N, L)
    spans = []
    for i in range(N):
        start = int(torch.randint(0, L - 1, (1,), generator=gen))
        end = int(torch.randint(start + 1, L + 1, (1,), generator=gen))
        mask[i, start:end] = 1
        spans.append((start, end))
    return mask, spans


def test_gae_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    N, L, gamma, lam = 5, 9, 0.97, 0.9
    rewards, values = torch.randn(N, L, generator=gen), torch.randn(N, L, generator=gen)
    mask, spans = _random_span_mask(N, L, gen)
    adv, ret = compute_gae(rewards * mask, values * mask, mask, gamma, lam)
    for i, (s, e) in enumerate(spans):
        r, v = rewards[i, s:e].tolist(), values[i, s:e].tolist()
        T = len(r)
        for t in range(T):
            # A_t = sum_k (γλ)^k δ_{t+k},  δ_t = r_t + γ V_{t+1} − V_t  (V after the last action is 0)
            a = 0.0
            for k in range(T - t):
                nv = v[t + k + 1] if t + k + 1 < T else 0.0
                a += (gamma * lam) ** k * (r[t + k] + gamma * nv - v[t + k])
            assert adv[i, s + t].item() == pytest.approx(a, abs=1e-5)
            assert ret[i, s + t].item() == pytest.approx(a + v[t], abs=1e-5)
        assert adv[i, :s].abs().sum() == 0 and adv[i, e:].abs().sum() == 0


def test_policy_and_value_losses_match_brute_force():
    gen = torch.Generator().manual_seed(1)
    N, L, eps, veps = 4, 6, 0.2, 0.3
    logp, old = torch.randn(N, L, generator=gen) * 0.3 - 2, torch.randn(N, L, generator=gen) * 0.3 - 2
    adv, mask = torch.randn(N, L, generator=gen), _random_span_mask(N, L, gen)[0]
    v, v_old, ret = (torch.randn(N, L, generator=gen) for _ in range(3))
    pl, st = policy_loss(logp, old, adv, mask, eps)
    vl, _ = value_loss(v, v_old, ret, mask, veps)
    pg, vf, clipped, kl, n = 0.0, 0.0, 0, 0.0, 0
    for i in range(N):
        for t in range(L):
            if not mask[i, t]:
                continue
            ratio = math.exp(logp[i, t] - old[i, t])
            a = float(adv[i, t])
            unclipped, clip = -a * ratio, -a * min(max(ratio, 1 - eps), 1 + eps)
            pg += max(unclipped, clip)
            clipped += clip > unclipped
            kl += 0.5 * float(logp[i, t] - old[i, t]) ** 2
            vc = float(v_old[i, t]) + min(max(float(v[i, t] - v_old[i, t]), -veps), veps)
            vf += 0.5 * max((float(v[i, t]) - float(ret[i, t])) ** 2, (vc - float(ret[i, t])) ** 2)
            n += 1
    assert pl.item() == pytest.approx(pg / n, abs=1e-5)
    assert vl.item() == pytest.approx(vf / n, abs=1e-5)
    assert st["clipfrac"] == pytest.approx(clipped / n, abs=1e-6)
    assert st["approx_kl"] == pytest.approx(kl / n, abs=1e-6)


def test_kl_shaped_rewards_match_brute_force():
    gen = torch.Generator().manual_seed(2)
    N, L, beta = 4, 7, 0.3
    mask, spans = _random_span_mask(N, L, gen)
    old, ref = torch.randn(N, L, generator=gen) * mask, torch.randn(N, L, generator=gen) * mask
    score = torch.randn(N, generator=gen)
    rewards, kl = kl_shaped_rewards(old, ref, score, mask, beta)
    for i, (s, e) in enumerate(spans):
        for t in range(L):
            k = float(old[i, t] - ref[i, t]) if s <= t < e else 0.0
            expected = -beta * k + (float(score[i]) if t == e - 1 else 0.0)  # the score lands on the last action
            assert kl[i, t].item() == pytest.approx(k, abs=1e-6)
            assert rewards[i, t].item() == pytest.approx(expected, abs=1e-6)


def _prompts(path, n=32):
    path.write_text("".join(json.dumps({"prompt": f"Question: What is {a} + {a + 3}?\nAnswer:"}) + "\n"
                            for a in range(n)))
    return path


@pytest.fixture(scope="module")
def warm_policy(tmp_path_factory, tiny_model_dir):
    """The tiny model after a short SFT that answers either with a number or with two words."""
    tmp = tmp_path_factory.mktemp("ppo_sft")
    rng = random.Random(0)
    words = "alpha beta gamma delta red green blue cat dog fox".split()
    rows = []
    for i in range(128):
        a = i % 32
        t = f" {rng.randint(0, 999)}" if rng.random() < 0.5 else " " + " ".join(rng.sample(words, 2))
        rows.append({"prompt": f"Question: What is {a} + {a + 3}?\nAnswer:", "completion": t})
    data = tmp / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = sft_train({"model": str(tiny_model_dir), "data": str(data), "output_dir": str(tmp / "sft"),
                     "max_steps": 40, "batch_size": 16, "lr": 1e-2, "max_length": 32, "progress": False,
                     "tensorboard": False, "log_every": 40, "schedule": "constant"})
    return res.final_dir


def _ppo_cfg(tmp_path, model, name, **kw):
    base = dict(model=str(model), data=str(_prompts(tmp_path / "prompts.jsonl")), output_dir=str(tmp_path / name),
                rollout_batch_size=16, mini_batch_size=8, ppo_epochs=2, max_new_tokens=6, kl_coef=0.05,
                lr=5e-4, log_every=1, progress=False, tensorboard=False, schedule="constant", max_steps=40)
    base.update(kw)
    return PPOConfig(**base)


def test_ppo_raises_reward_with_bounded_kl(tmp_path, warm_policy):
    cfg = _ppo_cfg(tmp_path, warm_policy, "ppo")
    before = build_stage(cfg, reward_fn=digit_reward).evaluate(None)  # 32 prompts, fixed seed
    result = train(cfg, reward_fn=digit_reward)
    after = [r for r in result.history if "eval_reward" in r][-1]
    roll = result.rollouts
    print(f"PPO mean reward {before['eval_reward']:.3f} -> {after['eval_reward']:.3f}; KL to the reference "
          f"{after['eval_kl']:.3f} nats/sequence; rollout rewards "
          f"{[round(r['reward'], 2) for r in roll]}")
    assert len(roll) == 10 and before["eval_kl"] == pytest.approx(0.0, abs=1e-5)
    assert after["eval_reward"] > before["eval_reward"] + 0.15
    assert after["eval_kl"] < 3.0 and max(r["kl"] for r in roll) < 5.0
    steps = [r for r in result.history if "loss" in r]
    for key in ("kl", "reward", "entropy", "clipfrac", "approx_kl", "value_loss"):
        assert any(key in r or f"rollout/{key}" in r for r in result.history), key
    assert all(0.0 <= r["clipfrac"] <= 1.0 for r in steps)
    AutoModelForCausalLM.from_pretrained(tmp_path / "ppo" / "final")


def test_ppo_resume_continues_the_uninterrupted_curve(tmp_path, tiny_model_dir):
    # 4 optimizer steps per rollout (2 epochs x 2 mini-batches): the checkpoint of step 2 is mid-rollout
    kw = dict(max_steps=6, save_every=2, keep_checkpoints=5, rollout_batch_size=8, mini_batch_size=4,
              ppo_epochs=2, max_new_tokens=4, reward_norm=True, missing_eos_penalty=0.5)
    full = train(_ppo_cfg(tmp_path, tiny_model_dir, "full", **kw), reward_fn=digit_reward)
    # a run that stopped after step 3: only the checkpoint of step 2 survived, and it is mid-rollout
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-2", crashed / "checkpoints" / "step-2")
    again = train(_ppo_cfg(tmp_path, tiny_model_dir, "crashed", **kw), reward_fn=digit_reward)
    losses = lambda r: [(x["step"], round(x["loss"], 6), round(x["kl"], 6) if "kl" in x else None)  # noqa: E731
                        for x in r.history if "loss" in x]
    assert losses(again) == losses(full)[2:]
    assert len(full.rollouts) == 2
    assert [round(r["reward"], 6) for r in again.rollouts] == [round(r["reward"], 6) for r in full.rollouts]


def test_ppo_bad_inputs(tmp_path, tiny_model_dir, capsys):
    # a reward model with another tokenizer
    other = tmp_path / "other"
    init_model("nano", other, vocab_size=300, texts=["a different corpus entirely"] * 50, seed=1)
    rm = new_reward_model(other)
    rm.save_pretrained(tmp_path / "other_rm")
    shutil.copy(other / "tokenizer.json", tmp_path / "other_rm")
    for f in other.glob("tokenizer*"):
        shutil.copy(f, tmp_path / "other_rm")
    for f in other.glob("special_tokens*"):
        shutil.copy(f, tmp_path / "other_rm")
    cfg = {"model": str(tiny_model_dir), "reward_model": str(tmp_path / "other_rm"),
           "data": str(_prompts(tmp_path / "p.jsonl")), "output_dir": str(tmp_path / "run"), "max_steps": 2}
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["train", "ppo", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokenizer differs" in err[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
    # a folder without a scalar head as reward model
    path.write_text(yaml.safe_dump({**cfg, "reward_model": str(tiny_model_dir)}))
    assert main(["train", "ppo", "--config", str(path)]) == 2
    assert "no scalar head" in capsys.readouterr().err
    # unknown keys and a missing reward
    path.write_text(yaml.safe_dump({**cfg, "reward_model": None, "kl_coeff": 0.1}))
    assert main(["train", "ppo", "--config", str(path)]) == 2
    assert "kl_coeff" in capsys.readouterr().err
    with pytest.raises(FlanmixError, match="exactly one of"):
        build_stage(PPOConfig(**{**cfg, "reward_model": None}))


def test_ppo_with_ptx_and_reward_model(tmp_path, tiny_model_dir):
    rm_dir = tmp_path / "rm"
    new_reward_model(tiny_model_dir).save_pretrained(rm_dir)
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, rm_dir / f.name)
    ptx = tmp_path / "ptx.jsonl"
    ptx.write_text("".join(json.dumps({"prompt": f"What is {a} + 1?", "completion": f" {a + 1}"}) + "\n"
                           for a in range(16)))
    res = train(_ppo_cfg(tmp_path, tiny_model_dir, "ptx", reward_model=str(rm_dir), ptx_data=str(ptx),
                         ptx_coef=0.5, max_steps=2, rollout_batch_size=4, mini_batch_size=4, ppo_epochs=1,
                         max_new_tokens=4))
    steps = [r for r in res.history if "loss" in r]
    assert len(steps) == 2 and all(r["ptx_loss"] > 0 for r in steps)
    assert (tmp_path / "ptx" / "final" / "critic" / "config.json").is_file()


def test_action_logprobs_equal_full_logits(tiny_model_dir):
    actor = load_policy(tiny_model_dir).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (3, 10), generator=gen)
    attn = torch.tensor([[1] * 10, [1] * 7 + [0] * 3, [1] * 5 + [0] * 5])
    amask = torch.zeros(3, 9)
    amask[0, 4:9], amask[1, 3:6], amask[2, 1:4] = 1, 1, 1
    with torch.no_grad():
        logits = actor(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn)).logits
        full = token_logprobs(logits, ids)
        got = action_logprobs(actor, ids, attn, amask)
    assert torch.allclose(got, full * amask, atol=1e-5)


def test_evaluation_forks_the_rng_of_the_device_it_samples_on():
    """PPO's evaluation reseeds for a fixed draw: on a GPU it must save and restore that GPU's RNG too (not only the
    CPU's), or a run that evaluates would sample differently from one that does not."""
    import torch

    from trainers.runtime import accelerator_rng

    assert accelerator_rng(torch.device("cpu")) == {"devices": []}
    assert accelerator_rng(torch.device("cuda", 1)) == {"devices": [1], "device_type": "cuda"}
    with torch.random.fork_rng(**accelerator_rng(torch.device("cpu"))):
        torch.manual_seed(0)
    state = torch.get_rng_state()
    with torch.random.fork_rng(**accelerator_rng(torch.device("cpu"))):
        torch.manual_seed(123)
        torch.rand(3)
    assert torch.equal(state, torch.get_rng_state())

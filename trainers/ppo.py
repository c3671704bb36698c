"""PPO stage (InstructGPT-style RLHF): actor, critic, frozen reference, and a reward model or reward function.

One rollout (``rollout_batch_size`` prompts):
  1. sample a completion per prompt from the actor (``generate``), cut after the first EOS;
  2. score it: a reward model read at the last non-pad token, or a programmatic reward function;
     optional missing-EOS penalty and running reward normalisation;
  3. per-token reward  r_t = −β · (log π_old(a_t) − log π_ref(a_t))  +  [t = last] · score;
  4. GAE with (γ, λ):   δ_t = r_t + γ V(s_{t+1}) − V(s_t),   Â_t = δ_t + γλ Â_{t+1},   R_t = Â_t + V(s_t).

Then ``ppo_epochs`` passes over the rollout in shuffled micro-batches of ``mini_batch_size``, each minimising

    L = E_t[ max(−Â_t ρ_t, −Â_t clip(ρ_t, 1−ε, 1+ε)) ]                                  (clipped policy loss)
      + c_v · ½ E_t[ max((V_t − R_t)², (V_old,t + clip(V_t − V_old,t, −ε_v, ε_v) − R_t)²) ] (clipped value loss)
      + γ_ptx · E_pretrain[ −log π(x) ]                                                   (optional, InstructGPT)

with ρ_t = π(a_t)/π_old(a_t) (the equations: `trainers.losses.ppo`). Logged: kl, reward, score, entropy, clipfrac,
approx_kl, value_loss, policy_loss.

The stage feeds the shared loop (`trainers.loop.train`) through ``batches(ctx)``; the loop optimises one module
holding actor and critic. Everything needed to continue a run exactly — the rollout in progress, the position in
it, the rollout counter and the running reward statistics — is in ``state_dict()``, so a resumed run continues
the uninterrupted curve (the loop restores model, optimizer and RNG states).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from flanmix.core.errors import FlanmixError
from trainers import loop
from trainers.adapters import as_forward, backbone, frozen_base, has_adapter, wrap
from trainers.config import AdapterField, LoopSettings, parse_config, write_run_info
from trainers.data import adds_bos, prompt_ids, response_ids
from trainers.logprobs import entropy_from_logits, gather_logprobs, masked_mean, masked_whiten, output_logits
from trainers.losses.ppo import compute_gae, kl_shaped_rewards, policy_loss, value_loss
from trainers.models import check_same_tokenizer, load_tokenizer, require_decoder_only
from trainers.policy import load_policy
from trainers.preference import EncodedGroup, check_completion, collate, pad_id_of, read_prompts
from trainers.protocol import Stage, TrainResult
from trainers.rewards import load_reward_fn, load_reward_model, new_reward_model, reward_scores, scalar_head
from trainers.runtime import accelerator_rng


class RunningMoments:
    """Running mean/std of scalar rewards (Chan et al. parallel update), part of the checkpointed state."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, xs: torch.Tensor) -> None:
        xs = xs.double()
        b_mean, b_var, b_n = xs.mean().item(), xs.var(unbiased=False).item(), xs.numel()
        delta = b_mean - self.mean
        tot = self.count + b_n
        self.mean += delta * b_n / tot
        m2 = self.var * self.count + b_var * b_n + delta ** 2 * self.count * b_n / tot
        self.var, self.count = m2 / tot, tot

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 1e-8))

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, d: dict) -> None:
        self.mean, self.var, self.count = d["mean"], d["var"], d["count"]


# ------------------------------------------------------------------------------------------------------ models

class ActorCritic(torch.nn.Module):
    """The one module the loop optimises: the policy (causal LM) and the critic (backbone + scalar head)."""

    def __init__(self, actor, critic):
        super().__init__()
        self.actor = actor
        self.critic = critic


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over attended tokens only (so left padding does not shift them)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def action_logprobs(actor, input_ids, attention_mask, action_mask, with_entropy: bool = False):
    """log π(a_t) on the [N, T-1] grid of `action_mask` (zero elsewhere), and optionally the mean entropy there.

    The vocabulary projection runs only at the positions that predict an action token, so no [N, T, V] logits
    tensor is ever built (the output head must be a plain linear layer)."""
    hidden = backbone(actor)(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids_from_mask(attention_mask), use_cache=False).last_hidden_state
    sel = action_mask.bool()
    logits = output_logits(actor, hidden[:, :-1][sel])  # the head plus any soft-capping / logit scale the model has
    lp = gather_logprobs(logits, input_ids[:, 1:][sel])
    out = torch.zeros(action_mask.shape, dtype=lp.dtype, device=lp.device)
    out = out.index_put((sel.nonzero(as_tuple=True)), lp)
    if not with_entropy:
        return out
    with torch.no_grad():
        ent = entropy_from_logits(logits).mean() if logits.shape[0] else logits.new_zeros(())
    return out, ent


def critic_forward(critic, input_ids, attention_mask) -> torch.Tensor:
    """V(s_t) at every position [N, T]: the critic's scalar head on each hidden state."""
    hidden = backbone(critic)(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids_from_mask(attention_mask), use_cache=False).last_hidden_state
    return scalar_head(critic)(hidden).squeeze(-1).float()


def call_reward_fn(fn: Callable, prompts: list[str], completions: list[str], rows: list[dict]) -> torch.Tensor:
    """Scores from a reward function f(prompts, completions[, rows])."""
    try:
        n_params = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        n_params = 3
    out = fn(prompts, completions, rows) if n_params >= 3 else fn(prompts, completions)
    return torch.tensor([float(x) for x in out], dtype=torch.float32)


# -------------------------------------------------------------------------------------------------------- stage

class PPOStage(Stage):
    """The PPO stage (see trainers.protocol): it makes its own micro-batches from rollouts (`batches`)."""

    name = "ppo"

    def __init__(self, actor, critic, tokenizer, prompts: Sequence[dict], *, reward_model=None,
                 reward_fn: Callable | None = None, ref_model=None, rollout_batch_size: int = 8,
                 mini_batch_size: int = 8, ppo_epochs: int = 1, max_new_tokens: int = 32, temperature: float = 1.0,
                 kl_coef: float = 0.05, gamma: float = 1.0, lam: float = 0.95, clip: float = 0.2,
                 value_clip: float = 0.2, vf_coef: float = 0.1, whiten_advantages: bool = True,
                 reward_norm: bool = False, missing_eos_penalty: float | None = None,
                 ptx_data: Sequence[tuple[list[int], list[int]]] | None = None, ptx_coef: float = 0.0,
                 max_prompt_length: int = 64, seed: int = 0):
        if reward_model is None and reward_fn is None:
            raise FlanmixError("PPO needs a reward model or a reward function", field="reward")
        if not prompts:
            raise FlanmixError("PPO needs prompts", field="data")
        if rollout_batch_size % mini_batch_size:
            raise FlanmixError("rollout_batch_size must be a multiple of mini_batch_size", field="mini_batch_size")
        self.model = ActorCritic(actor, critic)
        self.tokenizer = tokenizer
        self.pad_id = pad_id_of(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        self.prompts = list(prompts)
        # with a LoRA actor and no separate reference, the reference is the actor with its adapter off
        self.ref_model = ref_model if ref_model is not None or has_adapter(actor) else copy.deepcopy(actor)
        if self.ref_model is not None:
            self.ref_model.requires_grad_(False).eval()
        self.reward_model = reward_model
        if reward_model is not None:
            reward_model.requires_grad_(False).eval()
        self.reward_fn = reward_fn
        self.rollout_batch_size, self.mini_batch_size, self.ppo_epochs = rollout_batch_size, mini_batch_size, ppo_epochs
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.kl_coef, self.gamma, self.lam = kl_coef, gamma, lam
        self.clip, self.value_clip, self.vf_coef = clip, value_clip, vf_coef
        self.whiten_advantages, self.reward_norm = whiten_advantages, reward_norm
        self.missing_eos_penalty = missing_eos_penalty
        self.ptx_data, self.ptx_coef = list(ptx_data or []), ptx_coef
        self.max_prompt_length, self.seed = max_prompt_length, seed
        self.moments = RunningMoments()
        # state of the rollout in progress (checkpointed)
        self.rollout_idx = 0
        self.buffer: dict | None = None
        self.order: list[list[int]] = []
        self.pos = 0
        self.ptx_pos = 0
        self.history: list[dict] = []  # per-rollout stats (reward, kl, ...) — handy for tests and reports
        bos = adds_bos(tokenizer)
        self.prompt_ids = [prompt_ids(tokenizer, p["prompt"], bos=bos)[-max_prompt_length:] for p in self.prompts]

    # -- protocol --------------------------------------------------------------------------------------------
    def setup(self, ctx) -> None:
        if self.ref_model is not None:
            self.ref_model.to(ctx.device)
        if self.reward_model is not None:
            self.reward_model.to(ctx.device)

    def count(self, batch) -> float:
        return float(batch["action_mask"].sum().item())

    def state_dict(self) -> dict:
        buf = None
        if self.buffer is not None:
            buf = {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in self.buffer.items()}
            buf["_dtypes"] = {k: str(v.dtype) for k, v in self.buffer.items() if isinstance(v, torch.Tensor)}
        return {"rollout_idx": self.rollout_idx, "pos": self.pos, "order": self.order, "ptx_pos": self.ptx_pos,
                "moments": self.moments.state_dict(), "buffer": buf, "history": self.history}

    def load_state_dict(self, d: dict) -> None:
        self.rollout_idx, self.pos, self.order = d["rollout_idx"], d["pos"], d["order"]
        self.ptx_pos = d.get("ptx_pos", 0)
        self.moments.load_state_dict(d["moments"])
        self.history = list(d.get("history", []))
        buf = d.get("buffer")
        if buf is None:
            self.buffer = None
        else:
            dtypes = buf.pop("_dtypes")
            self.buffer = {k: torch.tensor(v, dtype=getattr(torch, dtypes[k].replace("torch.", "")))
                           if k in dtypes else v for k, v in buf.items()}

    def batches(self, ctx):
        """Micro-batches forever: a fresh rollout whenever the current one has been used ppo_epochs times."""
        while True:
            if self.buffer is None or self.pos >= len(self.order):
                self.buffer = self.rollout(ctx.unwrapped.actor if ctx is not None else self.model.actor,
                                           ctx.unwrapped.critic if ctx is not None else self.model.critic,
                                           ctx.device if ctx is not None else torch.device("cpu"))
                if ctx is not None:
                    ctx.log({"step": ctx.step, **{f"rollout/{k}": v for k, v in self.history[-1].items()}})
                self.order = self._minibatch_order()
                self.pos = 0
            idx = self.order[self.pos]
            self.pos += 1
            mb = {k: v[idx] for k, v in self.buffer.items() if isinstance(v, torch.Tensor)}
            if self.ptx_coef > 0 and self.ptx_data:
                mb.update(self._ptx_batch())
            yield mb

    def loss(self, model, batch):
        # the actor-critic container may sit in a DDP / DeepSpeed wrapper: run as its forward (`as_forward`)
        return as_forward(model, self.actor_critic_loss, batch)

    def actor_critic_loss(self, model, batch):
        """The clipped policy loss plus the value loss (and the ptx term) of one minibatch of rollouts."""
        actor, critic = model.actor, model.critic
        ids, attn, amask = batch["input_ids"], batch["attention_mask"], batch["action_mask"]
        logps, ent = action_logprobs(actor, ids, attn, amask, with_entropy=True)
        values = critic_forward(critic, ids, attn)[:, :-1]
        pg, pg_stats = policy_loss(logps, batch["old_logps"], batch["advantages"], amask, self.clip)
        vf, vf_stats = value_loss(values, batch["old_values"], batch["returns"], amask, self.value_clip)
        loss = pg + self.vf_coef * vf
        metrics = {"policy_loss": pg.item(), "value_loss": vf.item(), "entropy": ent.item(), **pg_stats, **vf_stats}
        if "ptx_input_ids" in batch:
            pm = batch["ptx_loss_mask"][:, 1:].float()
            ptx = -masked_mean(action_logprobs(actor, batch["ptx_input_ids"], batch["ptx_attention_mask"], pm), pm)
            loss = loss + self.ptx_coef * ptx
            metrics["ptx_loss"] = ptx.item()
        return loss, metrics

    @torch.no_grad()
    def evaluate(self, ctx=None, n: int = 64) -> dict:
        """Mean raw reward and KL (nats/sequence) of fresh samples for the first n prompts, with a fixed seed
        and the global RNGs left untouched - the CPU's and the accelerator's the run samples on - so evaluating
        does not change a training run."""
        actor = ctx.unwrapped.actor if ctx is not None else self.model.actor
        critic = ctx.unwrapped.critic if ctx is not None else self.model.critic
        device = ctx.device if ctx is not None else torch.device("cpu")
        saved = (self.rollout_idx, self.rollout_batch_size, list(self.history), self.moments.state_dict())
        with torch.random.fork_rng(**accelerator_rng(device)):
            torch.manual_seed(self.seed + 12345)
            self.rollout_idx, self.rollout_batch_size = 0, min(n, len(self.prompts))
            self.rollout(actor, critic, device)
            stats = self.history[-1]
        self.rollout_idx, self.rollout_batch_size, self.history = saved[0], saved[1], saved[2]
        self.moments.load_state_dict(saved[3])
        return {"eval_reward": stats["reward"], "eval_kl": stats["kl"], "eval_length": stats["length"]}

    def save(self, ctx, out_dir: Path) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model) if ctx is not None else self.model
        out_dir = Path(out_dir)
        model.actor.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        model.critic.save_pretrained(out_dir / "critic")

    # -- rollout ---------------------------------------------------------------------------------------------
    def _minibatch_order(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rollout_idx)
        order = []
        for _ in range(self.ppo_epochs):
            perm = torch.randperm(self.rollout_batch_size, generator=g).tolist()
            order += [perm[i: i + self.mini_batch_size] for i in range(0, len(perm), self.mini_batch_size)]
        return order

    def _ptx_batch(self) -> dict:
        rows = [self.ptx_data[(self.ptx_pos + i) % len(self.ptx_data)] for i in range(self.mini_batch_size)]
        self.ptx_pos += self.mini_batch_size
        b = collate([EncodedGroup(p, [c], [0.0]) for p, c in rows], self.pad_id)
        return {"ptx_input_ids": b["input_ids"], "ptx_attention_mask": b["attention_mask"],
                "ptx_loss_mask": b["loss_mask"]}

    def _sample(self, actor, device, p_ids: list[list[int]]) -> tuple[list[list[int]], list[bool]]:
        """One sampled completion per prompt: tokens up to and including the first EOS, and whether it had one."""
        P = max(len(p) for p in p_ids)
        left = torch.full((len(p_ids), P), self.pad_id, dtype=torch.long)
        left_mask = torch.zeros((len(p_ids), P), dtype=torch.long)
        for i, p in enumerate(p_ids):
            left[i, P - len(p):] = torch.tensor(p)
            left_mask[i, P - len(p):] = 1
        was = actor.training
        actor.eval()
        gen = actor.generate(input_ids=left.to(device), attention_mask=left_mask.to(device), do_sample=True,
                             top_k=0, top_p=1.0, temperature=self.temperature, max_new_tokens=self.max_new_tokens,
                             pad_token_id=self.pad_id, eos_token_id=self.eos_id).cpu()
        actor.train(was)
        responses, has_eos = [], []
        for row in gen[:, P:].tolist():  # EOS found by position: pad may equal EOS
            cut = row.index(self.eos_id) + 1 if self.eos_id in row else len(row)
            responses.append(row[:cut] if cut > 0 else row[:1])
            has_eos.append(self.eos_id in row)
        return responses, has_eos

    def _pack(self, p_ids: list[list[int]], responses: list[list[int]]):
        """Right-padded prompt + response: ids, attention mask, and the action mask aligned with logits[:, :-1]."""
        seqs = [p + r for p, r in zip(p_ids, responses)]
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), T), dtype=torch.long)
        amask = torch.zeros((len(seqs), T - 1), dtype=torch.float32)
        for i, (p, s) in enumerate(zip(p_ids, seqs)):
            ids[i, : len(s)] = torch.tensor(s)
            attn[i, : len(s)] = 1
            amask[i, len(p) - 1: len(s) - 1] = 1
        return ids, attn, amask

    def _score(self, ids: torch.Tensor, attn: torch.Tensor, rows: list[dict], p_ids: list[list[int]],
               responses: list[list[int]], has_eos: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw reward, shaped score): the reward model or function, then the EOS penalty and normalisation."""
        if self.reward_model is not None:
            raw = reward_scores(self.reward_model, ids, attn).float().cpu()
        else:
            prompts_text = [self.tokenizer.decode(p, skip_special_tokens=True) for p in p_ids]
            completions = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
            raw = call_reward_fn(self.reward_fn, prompts_text, completions, rows)
        score = raw.clone()
        if self.missing_eos_penalty is not None:
            score = score - self.missing_eos_penalty * (~torch.tensor(has_eos)).float()
        if self.reward_norm:
            self.moments.update(score)
            score = (score - self.moments.mean) / self.moments.std
        return raw, score

    @torch.no_grad()
    def rollout(self, actor, critic, device) -> dict:
        """Sample, score and advantage one batch of prompts; returns right-padded tensors."""
        n = len(self.prompts)
        start = (self.rollout_idx * self.rollout_batch_size) % n
        sel = [(start + i) % n for i in range(self.rollout_batch_size)]
        self.rollout_idx += 1
        rows = [self.prompts[i] for i in sel]
        p_ids = [self.prompt_ids[i] for i in sel]
        responses, has_eos = self._sample(actor, device, p_ids)
        ids, attn, amask = self._pack(p_ids, responses)
        ids_d, attn_d, amask_d = ids.to(device), attn.to(device), amask.to(device)
        old_logps = action_logprobs(actor, ids_d, attn_d, amask_d).cpu() * amask
        if self.ref_model is None:
            with frozen_base(actor):
                ref_logps = action_logprobs(actor, ids_d, attn_d, amask_d).cpu() * amask
        else:
            ref_logps = action_logprobs(self.ref_model, ids_d, attn_d, amask_d).cpu() * amask
        values = critic_forward(critic, ids_d, attn_d)[:, :-1].cpu() * amask
        raw, score = self._score(ids_d, attn_d, rows, p_ids, responses, has_eos)
        rewards, kl = kl_shaped_rewards(old_logps, ref_logps, score, amask, self.kl_coef)
        adv, returns = compute_gae(rewards, values, amask, self.gamma, self.lam)
        if self.whiten_advantages:
            adv = masked_whiten(adv, amask) * amask
        stats = {"rollout": self.rollout_idx, "reward": raw.mean().item(), "score": score.mean().item(),
                 "kl": kl.sum(-1).mean().item(), "length": amask.sum(-1).mean().item(),
                 "eos_rate": torch.tensor(has_eos).float().mean().item()}
        self.history.append(stats)
        return {"input_ids": ids, "attention_mask": attn, "action_mask": amask, "old_logps": old_logps,
                "old_values": values, "advantages": adv, "returns": returns, "ref_logps": ref_logps}


# ------------------------------------------------------------------------------------------------- building it

class PPOConfig(LoopSettings, AdapterField):
    """`flanmix train ppo --config ppo.yaml`: loop settings plus these. max_steps (optimizer steps) is required;
    one rollout gives ppo_epochs * rollout_batch_size / (mini_batch_size * grad_accum) steps."""

    model: str                          # the actor's start (usually the SFT output)
    reference: str | None = None        # default: a frozen copy of the initial actor
    critic: str | None = None           # default: the reward model, else the actor's folder (new head)
    reward_model: str | None = None     # a reward-model folder (the rm stage's output) ...
    reward_fn: str | None = None        # ... or 'module:function'(prompts, completions, rows) -> scores
    data: str                           # prompt rows (JSONL with prompt / inputs / messages)
    rollout_batch_size: int = Field(16, ge=1)
    mini_batch_size: int = Field(8, ge=1)
    ppo_epochs: int = Field(1, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    max_prompt_length: int = Field(128, ge=1)
    temperature: float = Field(1.0, gt=0)
    kl_coef: float = Field(0.05, ge=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    clip: float = Field(0.2, gt=0)
    value_clip: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    whiten_advantages: bool = True
    reward_norm: bool = False
    missing_eos_penalty: float | None = None
    ptx_data: str | None = None         # pretraining/SFT rows (prompt + completion) for the ptx term
    ptx_coef: float = Field(0.0, ge=0)
    max_length: int = Field(256, ge=4)  # ptx rows are cut to this
    lr: float = Field(1e-5, gt=0)


STAGE_KEYS = ("rollout_batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens", "max_prompt_length",
              "temperature", "kl_coef", "gamma", "lam", "clip", "value_clip", "vf_coef", "whiten_advantages",
              "reward_norm", "missing_eos_penalty", "ptx_coef")


def read_ptx(path: str | Path, tokenizer, max_length: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of the ptx rows, prompts cut to half of max_length from the left."""
    out = []
    half = max_length // 2
    for row in read_prompts(path):
        comp = row.get("completion", row.get("chosen", row.get("targets")))
        if comp is None:
            raise FlanmixError("ptx rows need a completion (or chosen / targets)", field="ptx_data")
        p = prompt_ids(tokenizer, row["prompt"])[-half:]
        c = check_completion(response_ids(tokenizer, row["prompt"], comp))
        out.append((p, c[: max_length - len(p)]))
    return out


def build_stage(cfg: PPOConfig, reward_fn: Callable | None = None, prompts: list | None = None) -> PPOStage:
    """Load actor (and reference), critic (default: the reward model, else the actor's folder with a fresh
    head), and the reward model or function."""
    fn_spec = reward_fn if reward_fn is not None else cfg.reward_fn
    if (cfg.reward_model is None) == (fn_spec is None):
        raise FlanmixError("give exactly one of reward_model and reward_fn", field="reward_model")
    require_decoder_only(cfg.model, "ppo")
    tokenizer = load_tokenizer(cfg.model)
    rm = None
    if cfg.reward_model is not None:
        rm = load_reward_model(cfg.reward_model)
        check_same_tokenizer(tokenizer, load_tokenizer(cfg.reward_model), cfg.reward_model)
    fn = load_reward_fn(fn_spec) if fn_spec is not None else None
    rows = prompts if prompts is not None else read_prompts(cfg.data)
    torch.manual_seed(cfg.seed)
    actor = load_policy(cfg.model, cfg.peft)
    if cfg.peft is not None:
        actor = wrap(actor, cfg.peft, base_path=cfg.model)
    ref = None
    if cfg.reference:
        check_same_tokenizer(tokenizer, load_tokenizer(cfg.reference), cfg.reference)
        ref = load_policy(cfg.reference)
    critic_src = cfg.critic or cfg.reward_model or cfg.model
    if critic_src != cfg.model:
        check_same_tokenizer(tokenizer, load_tokenizer(critic_src), critic_src)
    critic = new_reward_model(critic_src, seed=cfg.seed, peft=cfg.peft)
    if cfg.peft is not None:  # the value head trains in full alongside the critic's adapter
        critic = wrap(critic, cfg.peft, base_path=critic_src, scalar=True)
    ptx = read_ptx(cfg.ptx_data, tokenizer, cfg.max_length) if cfg.ptx_data is not None else None
    kwargs = {k: getattr(cfg, k) for k in STAGE_KEYS}
    return PPOStage(actor, critic, tokenizer, rows, reward_model=rm, reward_fn=fn, ref_model=ref, ptx_data=ptx,
                    seed=cfg.seed, **kwargs)


def train(config: PPOConfig | dict | str | Path, reward_fn: Callable | None = None, **overrides: Any) -> TrainResult:
    """Run PPO; returns the loop's TrainResult (actor in <output_dir>/final, critic in final/critic) with the
    per-rollout statistics as `result.rollouts`."""
    cfg = parse_config(config, PPOConfig, overrides)
    if cfg.max_steps is None:
        raise FlanmixError("ppo needs max_steps (optimizer steps)", field="max_steps")
    stage = build_stage(cfg, reward_fn=reward_fn)
    write_run_info(cfg, "ppo", {"prompts": len(stage.prompts)})
    result = loop.train(stage, cfg)
    result.rollouts = stage.history  # type: ignore[attr-defined]
    return result

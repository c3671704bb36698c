"""Reward model stage: a causal-LM backbone with a scalar head, trained on pairs and k-way rankings.

Score position (defined here, once): the reward of a sequence is the head applied to the hidden state of its last
non-pad token, found from the attention mask — never from token ids, so it is right when pad == eos and with left
or right padding (`last_token_index`).

Loss (InstructGPT, eq. 1; with the optional margin of Llama 2):

    loss(θ) = − 1/|P_x| Σ_{(y_w, y_l) ∈ P_x} log σ( r_θ(x, y_w) − r_θ(x, y_l) − m )

P_x are all (better, worse) pairs of the k responses to prompt x; the batch loss is the mean over prompts. A pair
row is k = 2, one pair.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from flanmix.core.errors import FlanmixError
from trainers.config import LoopSettings
from trainers.preference import GroupDataStage

SCALAR_HEADS = ("score", "classifier")


# --------------------------------------------------------------------------------------------------- the model

def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended (non-pad) position of each row; works for left and right padding."""
    T = attention_mask.shape[-1]
    pos = torch.arange(T, device=attention_mask.device).expand_as(attention_mask)
    return (pos * attention_mask.to(pos.dtype)).argmax(-1)


def scalar_head(model) -> torch.nn.Module:
    for name in SCALAR_HEADS:
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise FlanmixError(f"{type(model).__name__} has no scalar head", expected="a score/classifier head")


def token_values(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Head output at every position [N, T] (PPO's critic uses this; the RM reads one position of it)."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return scalar_head(model)(hidden).squeeze(-1).float()


def reward_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """r(x, y) per sequence [N]: the scalar head at the last non-pad token."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    idx = last_token_index(attention_mask)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
    return scalar_head(model)(last).squeeze(-1).float()


def new_reward_model(path: str | Path, seed: int = 0, head_std: float | None = None):
    """A scalar-head model initialised from a causal-LM (or reward-model) folder."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from transformers.utils import logging as hf_logging

    from trainers.models import check_model_dir

    path = check_model_dir(path)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    config.num_labels = 1
    if config.pad_token_id is None:
        config.pad_token_id = config.eos_token_id
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the "newly initialized score head" warning is expected here
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config, local_files_only=True)
    except Exception as err:  # an architecture without a sequence-classification class, broken weights, ...
        raise FlanmixError(f"cannot build a scalar-head model: {str(err).splitlines()[0][:200]}", file=path,
                           field="model") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    head = scalar_head(model)
    if not is_reward_model_folder(path) and isinstance(head, torch.nn.Linear):
        std = head_std if head_std is not None else 1.0 / (config.hidden_size + 1) ** 0.5
        torch.nn.init.normal_(head.weight, std=std)
        if head.bias is not None:
            torch.nn.init.zeros_(head.bias)
    return model


def is_reward_model_folder(path: str | Path) -> bool:
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        return False
    cfg = json.loads(cfg_path.read_text())
    archs = cfg.get("architectures") or []
    n_labels = cfg.get("num_labels", len(cfg.get("id2label", {}) or {}) or None)
    return any(a.endswith("ForSequenceClassification") for a in archs) and n_labels == 1


def load_reward_model(path: str | Path):
    """Load a trained reward model; a folder without a scalar head is a user error."""
    from transformers import AutoModelForSequenceClassification

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FlanmixError("reward model folder not found (no config.json)", file=path)
    if not is_reward_model_folder(path):
        raise FlanmixError("reward model folder has no scalar head", file=path,
                           expected="a model saved by the rm stage (…ForSequenceClassification, num_labels=1)")
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
    except Exception as err:
        raise FlanmixError(f"cannot load the reward model: {str(err).splitlines()[0][:200]}", file=path) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    scalar_head(model)
    return model


# ----------------------------------------------------------------------------------------------------- the loss

def group_mean(values: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean over groups of the per-group mean of `values` (indexed by `group`); returns (mean, n_groups)."""
    if values.numel() == 0:
        return values.sum(), 0
    uniq, inv = torch.unique(group, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=values.dtype, device=values.device).index_add(0, inv, values)
    counts = torch.zeros(len(uniq), dtype=values.dtype, device=values.device).index_add(
        0, inv, torch.ones_like(values))
    return (sums / counts).mean(), len(uniq)


def pairwise_loss(rewards: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
    """−log σ(r_w − r_l − m), averaged per prompt then over prompts; metrics accuracy and mean margin."""
    r_w = rewards[batch["pair_chosen"]]
    r_l = rewards[batch["pair_rejected"]]
    diff = r_w - r_l
    per_pair = -F.logsigmoid(diff - batch["pair_margin"].to(diff.dtype))
    loss, _ = group_mean(per_pair, batch["pair_group"])
    with torch.no_grad():
        metrics = {
            "accuracy": (diff > 0).float().mean().item(),
            "margin": diff.mean().item(),
            "reward_mean": rewards.mean().item(),
        }
    return loss, metrics


def batch_reward_scores(model, batch: dict) -> torch.Tensor:
    """r(x, y) of every sequence of a padded or prefix-shared preference batch (same score position)."""
    if "tok_row" in batch:
        from trainers.logprobs import shared_hidden

        hidden = shared_hidden(model, batch)
        return scalar_head(model)(hidden[batch["last_row"], batch["last_pos"]]).squeeze(-1).float()
    return reward_scores(model, batch["input_ids"], batch["attention_mask"])


def rm_loss(model, batch: dict) -> tuple[torch.Tensor, dict]:
    return pairwise_loss(batch_reward_scores(model, batch), batch)


@torch.no_grad()
def evaluate_rm(model, encoded_groups, pad_id: int, batch_size: int = 32) -> dict:
    """Pairwise accuracy and mean margin of a reward model over held-out groups (all pairs counted equally)."""
    from trainers.preference import collate

    was = model.training
    model.eval()
    correct = total = 0
    margin_sum = 0.0
    device = next(model.parameters()).device
    for i in range(0, len(encoded_groups), batch_size):
        batch = collate(encoded_groups[i: i + batch_size], pad_id)
        r = reward_scores(model, batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu()
        d = r[batch["pair_chosen"]] - r[batch["pair_rejected"]]
        correct += int((d > 0).sum())
        total += d.numel()
        margin_sum += float(d.sum())
    model.train(was)
    return {"accuracy": correct / max(total, 1), "margin": margin_sum / max(total, 1), "pairs": total}


# ---------------------------------------------------------------------------------------------------- the stage

class RewardStage(GroupDataStage):
    """Stage protocol object for `trainers.loop.train` (see trainers/loop.py)."""

    name = "rm"

    def __init__(self, model, tokenizer, train_groups, eval_groups=None, prefix_sharing: bool = True):
        from trainers.preference import pad_id_of

        self.prefix_sharing = prefix_sharing
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = pad_id_of(tokenizer)
        self._train = train_groups
        self._eval = eval_groups or None

    def count(self, batch) -> int:
        return int(torch.unique(batch["pair_group"]).numel())

    def loss(self, model, batch):
        return rm_loss(model, batch)

    def evaluate(self, ctx) -> dict:
        if not self._eval:
            return {}
        model = ctx.unwrapped if ctx is not None else self.model
        res = evaluate_rm(model, self._eval, self.pad_id)
        return {"eval_accuracy": res["accuracy"], "eval_margin": res["margin"]}

    def save(self, ctx, out_dir: Path) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model) if ctx is not None else self.model
        model.config.pad_token_id = self.pad_id
        model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)


class RMConfig(LoopSettings):
    """`flanmix train rm --config rm.yaml`: loop settings plus these."""

    model: str                                      # causal-LM (e.g. the SFT output) or reward-model folder
    data: str                                       # pairs / rankings JSONL (or an HH-RLHF/PandaLM/ShareGPT file)
    eval_data: Optional[str] = None                 # held-out set; default: eval_fraction of data
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(256, ge=4)
    prefix_sharing: bool = True                     # encode each prompt once per group (see collate_shared)
    lr: float = Field(1e-4, gt=0)


def build_stage(cfg: RMConfig, groups=None, eval_groups=None) -> RewardStage:
    """Tokenizer, data and a scalar-head model initialised from cfg.model."""
    from trainers.preference import encode_groups, load_split, load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    train_g, eval_g = load_split(groups if groups is not None else cfg.data,
                                 eval_groups if eval_groups is not None else cfg.eval_data,
                                 cfg.eval_fraction, cfg.seed)
    model = new_reward_model(cfg.model, seed=cfg.seed)
    model.config.pad_token_id = tokenizer.pad_token_id
    return RewardStage(model, tokenizer, encode_groups(tokenizer, train_g, cfg.max_length),
                       encode_groups(tokenizer, eval_g, cfg.max_length), prefix_sharing=cfg.prefix_sharing)


def train(config: RMConfig | dict | str | Path, **overrides: Any):
    """Train a reward model; returns the loop's TrainResult (final model in <output_dir>/final)."""
    from trainers import loop
    from trainers.preference import parse_config, write_run_info

    cfg = parse_config(config, overrides, RMConfig)
    stage = build_stage(cfg)
    write_run_info(cfg, "rm", {"train_groups": len(stage._train), "eval_groups": len(stage._eval or [])})
    return loop.train(stage, cfg.loop_config())

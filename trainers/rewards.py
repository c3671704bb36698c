"""Where a reward comes from: a scalar-head reward model (the rm stage's output; PPO's critic has the same shape)
or a programmatic reward function.

Score position (defined here, once): the reward of a sequence is the head applied to the hidden state of its last
non-pad token, found from the attention mask — never from token ids, so it is right when pad == eos and with left
or right padding (`last_token_index`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from flanmix.core.errors import FlanmixError
from trainers.adapters import (
    SCALAR,
    SCALAR_HEADS,
    adapter_base,
    as_forward,
    backbone,
    is_adapter_dir,
    load_merged,
    quantization_kwargs,
)
from trainers.config import PeftSettings
from trainers.logprobs import shared_hidden
from trainers.models import check_model_dir


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended (non-pad) position of each row; works for left and right padding."""
    T = attention_mask.shape[-1]
    pos = torch.arange(T, device=attention_mask.device).expand_as(attention_mask)
    return (pos * attention_mask.to(pos.dtype)).argmax(-1)


def scalar_head(model) -> torch.nn.Module:
    """The scalar output layer of a sequence-classification model."""
    for name in SCALAR_HEADS:
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise FlanmixError(f"{type(model).__name__} has no scalar head", expected="a score/classifier head")


def reward_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """r(x, y) per sequence [N]: the scalar head at the last non-pad token."""
    # positions counted over real tokens: a left-padded row gets the positions it has alone (absolute-position
    # models such as GPT-2 depend on it; for right padding they are the default arange)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = backbone(model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                             use_cache=False).last_hidden_state
    idx = last_token_index(attention_mask)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
    return scalar_head(model)(last).squeeze(-1).float()


def batch_reward_scores(model, batch: dict) -> torch.Tensor:
    """r(x, y) of every sequence of a padded or prefix-shared preference batch (same score position); a model in a
    DDP / DeepSpeed wrapper scores them as the wrapper's forward (`trainers.adapters.as_forward`)."""
    return as_forward(model, _batch_reward_scores, batch)


def _batch_reward_scores(model, batch: dict) -> torch.Tensor:
    if "tok_row" in batch:
        hidden = shared_hidden(model, batch)
        return scalar_head(model)(hidden[batch["last_row"], batch["last_pos"]]).squeeze(-1).float()
    return reward_scores(model, batch["input_ids"], batch["attention_mask"])


def new_reward_model(path: str | Path, seed: int = 0, head_std: float | None = None,
                     peft: PeftSettings | None = None):
    """A scalar-head model initialised from a causal-LM (or reward-model) folder, or from an adapter folder (merged
    into its base); with `peft.qlora` the base is loaded in 4-bit (`trainers.adapters`)."""
    if is_adapter_dir(path):
        torch.manual_seed(seed)
        model = load_merged(path, scalar=True)
        return init_head(model, head_std) if adapter_base(path)[1] != SCALAR else model
    # transformers is imported when a model is built, not when trainers is imported (it takes seconds)
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

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
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config, local_files_only=True,
                                                                   **quantization_kwargs(peft))
    except FlanmixError:
        raise
    except Exception as err:  # an architecture without a sequence-classification class, broken weights, ...
        raise FlanmixError(f"cannot build a scalar-head model: {str(err).splitlines()[0][:200]}", file=path,
                           field="model") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if is_reward_model_folder(path):
        scalar_head(model)  # a reward model without a head is an error here, not at its first forward
        return model
    return init_head(model, head_std)


def init_head(model, head_std: float | None = None):
    """A fresh scalar head: N(0, 1/(hidden+1)) weights (or `head_std`), zero bias; returns the model."""
    head = scalar_head(model)
    if isinstance(head, torch.nn.Linear):
        std = head_std if head_std is not None else 1.0 / (model.config.hidden_size + 1) ** 0.5
        torch.nn.init.normal_(head.weight, std=std)
        if head.bias is not None:
            torch.nn.init.zeros_(head.bias)
    return model


def is_reward_model_folder(path: str | Path) -> bool:
    """True for a folder saved by the rm stage (…ForSequenceClassification with one label, or a LoRA rm run's
    scalar-head adapter)."""
    if is_adapter_dir(path):
        return adapter_base(path)[1] == SCALAR
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        return False
    cfg = json.loads(cfg_path.read_text())
    archs = cfg.get("architectures") or []
    n_labels = cfg.get("num_labels", len(cfg.get("id2label", {}) or {}) or None)
    return any(a.endswith("ForSequenceClassification") for a in archs) and n_labels == 1


def load_reward_model(path: str | Path):
    """Load a trained reward model; a folder without a scalar head is a user error."""
    from transformers import AutoModelForSequenceClassification  # see new_reward_model
    from transformers.utils import logging as hf_logging

    path = Path(path)
    if is_adapter_dir(path) and is_reward_model_folder(path):
        return load_merged(path)
    if not (path / "config.json").is_file():
        raise FlanmixError("reward model folder not found (no config.json)", file=path)
    if not is_reward_model_folder(path):
        raise FlanmixError("reward model folder has no scalar head", file=path,
                           expected="a model saved by the rm stage (…ForSequenceClassification, num_labels=1)")
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


def load_reward_fn(spec: str | Callable) -> Callable:
    """'module:function' (or a callable): f(prompts, completions, rows) -> list[float]."""
    if callable(spec):
        return spec
    if ":" not in spec:
        raise FlanmixError(f"reward function {spec!r} is not 'module:function'", field="reward_fn")
    mod, fn = spec.split(":", 1)
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as err:
        raise FlanmixError(f"cannot import reward function {spec!r}: {err}", field="reward_fn") from None

"""Loading a local transformers model folder + tokenizer, with one-line errors for the usual problems.

Any local causal-LM folder works (one from `flanmix init-model` or any downloaded checkpoint); nothing is fetched
from a hub: paths must exist, and loading runs with `local_files_only=True`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flanmix.core.errors import FlanmixError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_model_dir(path: str | Path) -> Path:
    """Raise FlanmixError unless `path` is a folder with a readable config.json and weights."""
    p = Path(path)
    if not p.exists():
        raise FlanmixError("model folder not found", file=p, field="model",
                           expected="a local folder from `flanmix init-model` or save_pretrained")
    if not p.is_dir():
        raise FlanmixError("model path is not a folder", file=p, field="model")
    cfg = p / "config.json"
    if not cfg.exists():
        raise FlanmixError("model folder has no config.json", file=p, field="model")
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FlanmixError(f"config.json is not valid JSON ({err})", file=cfg, field="model") from err
    if not any((p / w).exists() for w in WEIGHT_FILES):
        raise FlanmixError("model folder has no weights", file=p, field="model",
                           expected=" or ".join(WEIGHT_FILES[::2]))
    return p


def load_tokenizer(path: str | Path, *, require_eos: bool = True):
    """AutoTokenizer from a local folder; sets pad = eos if the tokenizer has no pad token."""
    # transformers (and torch) are imported when a model is loaded, so `check_model_dir` stays cheap for the CLI
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise FlanmixError("tokenizer folder not found", file=p, field="tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    except Exception as err:  # transformers raises OSError/ValueError/JSON errors for broken folders
        raise FlanmixError(f"cannot load tokenizer: {_one_line(err)}", file=p, field="tokenizer") from err
    if require_eos and tok.eos_token_id is None:
        raise FlanmixError("tokenizer has no EOS token; completions could never end", file=p, field="tokenizer",
                           expected="eos_token set in tokenizer_config.json")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # labels are built explicitly, so pad == eos cannot hide EOS from the loss
    tok.padding_side = "right"
    return tok


def load_causal_lm(path: str | Path, *, dtype: Any = None, attn_implementation: str | None = None):
    """AutoModelForCausalLM from a local folder (fp32 by default), with clear errors for broken folders."""
    import torch  # see load_tokenizer
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    p = check_model_dir(path)
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype or torch.float32}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise for tiny models and CLIs
    try:
        model = AutoModelForCausalLM.from_pretrained(p, **kwargs)
    except Exception as err:
        raise FlanmixError(f"cannot load model: {_one_line(err)}", file=p, field="model") from err
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model


def load_model_and_tokenizer(path: str | Path, *, tokenizer: str | Path | None = None, dtype: Any = None,
                             attn_implementation: str | None = None):
    """(model, tokenizer) from a local folder; the tokenizer may live in another folder. Checks that the
    tokenizer's ids fit the model's embedding table."""
    check_model_dir(path)
    tok = load_tokenizer(tokenizer or path)
    model = load_causal_lm(path, dtype=dtype, attn_implementation=attn_implementation)
    emb = model.get_input_embeddings()
    if emb is not None and len(tok) > emb.num_embeddings:
        raise FlanmixError(f"tokenizer has {len(tok)} tokens but the model embeds only {emb.num_embeddings}",
                           file=path, field="tokenizer")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def check_same_tokenizer(tokenizer, other, other_path: Any = None) -> None:
    """A second model (reward model, reference, critic) must read the policy's token ids: the vocabularies (and
    EOS) must be identical."""
    if tokenizer.get_vocab() != other.get_vocab() or tokenizer.eos_token_id != other.eos_token_id:
        raise FlanmixError("the reward model's tokenizer differs from the policy's", file=other_path,
                           field="tokenizer", expected="the same vocabulary and EOS as the policy")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]

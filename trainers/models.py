"""Loading a local transformers model folder + tokenizer, with one-line errors for the usual problems.

Any local folder whose architecture transformers knows works: a decoder-only model (`AutoModelForCausalLM`: Llama,
Qwen2, Mistral, GPT-2, GPT-NeoX, Gemma, ...) or an encoder-decoder (`AutoModelForSeq2SeqLM`: T5, Flan-T5, ...), from
`flanmix init-model` or downloaded. Nothing is fetched from a hub: paths must exist, loading runs with
`local_files_only=True`, and remote code is never run. `model_kind` reads only config.json, so the CLI can check a
folder without importing torch's model code.

Quirks handled here: a tokenizer without a pad token gets pad = eos (labels and score positions never depend on pad
ids); padding is right-sided for training; a model class without SDPA attention falls back to eager when SDPA was
asked for; a tokenizer whose ids do not fit the embedding table is refused.
"""

from __future__ import annotations

import json
import sys
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


#: what `model_kind` returns
CAUSAL, SEQ2SEQ = "causal", "seq2seq"


def read_model_config(path: str | Path) -> dict:
    """config.json of a checked model folder, as a dict."""
    p = check_model_dir(path)
    return json.loads((p / "config.json").read_text(encoding="utf-8"))


def model_kind(path: str | Path) -> str:
    """CAUSAL (decoder-only) or SEQ2SEQ (encoder-decoder) from the folder's config.json `model_type`; a type
    transformers does not know, or one without a language-model head, is a one-line FlanmixError."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    cfg = read_model_config(path)
    mtype = cfg.get("model_type")
    if not isinstance(mtype, str) or not mtype:
        raise FlanmixError("config.json has no model_type", file=Path(path) / "config.json", field="model_type")
    if mtype not in CONFIG_MAPPING_NAMES:
        import transformers

        raise FlanmixError(f"unknown architecture: model_type {mtype!r} is not one transformers "
                           f"{transformers.__version__} knows", file=path, field="model_type",
                           expected="a folder of a supported architecture (see docs/models.md)")
    if cfg.get("is_encoder_decoder") and mtype in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return SEQ2SEQ
    if mtype in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return CAUSAL
    if mtype in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return SEQ2SEQ
    raise FlanmixError(f"model_type {mtype!r} has no causal-LM or seq2seq-LM class in transformers", file=path,
                       field="model_type", expected="a language model (decoder-only or encoder-decoder)")


def is_encoder_decoder(model) -> bool:
    """True for an encoder-decoder model in memory (T5, ...), also behind a PEFT or accelerate wrapper."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def require_decoder_only(path: str | Path, stage: str | None = None) -> None:
    """FlanmixError (one line, exit 2) when `path` holds an encoder-decoder model: `stage` (rm, ppo) works on
    decoder-only models (its score / value is read at a decoder token that sees the whole sequence)."""
    try:  # only config.json: an adapter folder or a broken one is left to the stage's loader to report
        cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(cfg, dict) and cfg.get("is_encoder_decoder"):
        mtype = cfg.get("model_type")
        what = f"the {stage} stage trains decoder-only models" if stage else "a decoder-only model is needed here"
        raise FlanmixError(f"{mtype} is an encoder-decoder model; {what}", file=path, field="model",
                           expected="a decoder-only model (encoder-decoders: sft, dpo, rrhf, eval; see docs/models.md)")


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


def load_model(path: str | Path, *, dtype: Any = None, attn_implementation: str | None = None):
    """A language model of any architecture transformers knows (`model_kind`) from a local folder, fp32 by default,
    with one-line errors for unknown architectures and broken folders."""
    import torch  # see load_tokenizer
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
    from transformers.utils import logging as hf_logging

    p = check_model_dir(path)
    auto = AutoModelForSeq2SeqLM if model_kind(p) == SEQ2SEQ else AutoModelForCausalLM
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype or torch.float32}
    attn = resolve_attn_implementation(p, attn_implementation)
    if attn:
        kwargs["attn_implementation"] = attn
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise for tiny models and CLIs
    try:
        model = auto.from_pretrained(p, **kwargs)
    except Exception as err:
        raise FlanmixError(f"cannot load model: {_one_line(err)}", file=p, field="model") from err
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model


def load_causal_lm(path: str | Path, *, dtype: Any = None, attn_implementation: str | None = None):
    """A decoder-only model (AutoModelForCausalLM) from a local folder; an encoder-decoder is a one-line error."""
    require_decoder_only(path)
    return load_model(path, dtype=dtype, attn_implementation=attn_implementation)


def resolve_attn_implementation(path: str | Path, requested: str | None) -> str | None:
    """The attention implementation to load with: `requested`, except SDPA on a model class without SDPA support,
    which falls back to eager (with a note). None: transformers' default (SDPA where the class supports it)."""
    if requested != "sdpa":
        return requested
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    mtype = read_model_config(path).get("model_type")
    names = MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES if model_kind(path) == SEQ2SEQ \
        else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    import transformers

    cls = getattr(transformers, names.get(mtype, ""), None)
    if cls is not None and not getattr(cls, "_supports_sdpa", True):
        print(f"[models] {mtype}: {cls.__name__} has no SDPA attention; using eager", file=sys.stderr)
        return "eager"
    return requested


def load_model_and_tokenizer(path: str | Path, *, tokenizer: str | Path | None = None, dtype: Any = None,
                             attn_implementation: str | None = None):
    """(model, tokenizer) from a local folder, decoder-only or encoder-decoder; the tokenizer may live in another
    folder. Checks that the tokenizer's ids fit the model's embedding table."""
    check_model_dir(path)
    tok = load_tokenizer(tokenizer or path)
    model = load_model(path, dtype=dtype, attn_implementation=attn_implementation)
    check_vocab_fits(tok, model, path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def check_vocab_fits(tokenizer, model, path: Any = None) -> None:
    """FlanmixError unless every token id of `tokenizer` has a row in the model's embedding table."""
    emb = model.get_input_embeddings()
    if emb is not None and len(tokenizer) > emb.num_embeddings:
        raise FlanmixError(f"tokenizer has {len(tokenizer)} tokens but the model embeds only {emb.num_embeddings}",
                           file=path, field="tokenizer", expected="the tokenizer the model was trained with")


def check_same_tokenizer(tokenizer, other, other_path: Any = None) -> None:
    """A second model (reward model, reference, critic) must read the policy's token ids: the vocabularies (and
    EOS) must be identical."""
    if tokenizer.get_vocab() != other.get_vocab() or tokenizer.eos_token_id != other.eos_token_id:
        raise FlanmixError("the reward model's tokenizer differs from the policy's", file=other_path,
                           field="tokenizer", expected="the same vocabulary and EOS as the policy")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]

"""LoRA and QLoRA adapters (PEFT) for every stage: wrapping a model, the adapter-disabled base as the reference,
adapter folders (load, merge) and adapter-only checkpoints. The user-facing guide is docs/lora.md.

A stage with a `peft:` block (`trainers.config.PeftSettings`) wraps its model with `wrap`: the base weights are
frozen and only the LoRA matrices (plus the scalar head of a reward model or critic, which PEFT trains in full as a
"module to save") reach the optimizer. The frozen base doubles as the reference of DPO and PPO (`base_weights`):
switching the adapter off gives exactly the initial model's outputs, so no second copy is kept in memory.

An adapter folder is what PEFT's `save_pretrained` writes (`adapter_config.json`, `adapter_model.safetensors`) plus
the tokenizer; its config names the base model folder (an absolute path). `load_merged` turns it back into a full
model, and `merge_adapter` (the `flanmix merge-adapter` command) writes that model as a plain transformers folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from flanmix.core.atomic import atomic_dir
from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import read_json
from trainers import models
from trainers.config import PeftSettings
from trainers.models import check_model_dir, load_tokenizer

ADAPTER_CONFIG = "adapter_config.json"
# PEFT task types: a decoder-only policy, an encoder-decoder (T5) policy, a reward model / critic
CAUSAL_LM, SEQ2SEQ_LM, SCALAR = "CAUSAL_LM", "SEQ_2_SEQ_LM", "SEQ_CLS"
SCALAR_HEADS = ("score", "classifier")      # the head names of transformers' sequence-classification models


# ------------------------------------------------------------------------------------------------ recognising

def is_peft_model(model: Any) -> bool:
    """True for a PEFT-wrapped model (checked by its interface, so plain models never import peft)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def has_adapter(model: torch.nn.Module) -> bool:
    """True if `model` or one of its submodules (PPO's actor and critic) is adapter-wrapped."""
    return any(is_peft_model(m) for m in model.modules())


def plain_model(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (its linear layers carry the LoRA matrices); a plain model as is."""
    return model.get_base_model() if is_peft_model(model) else model


def backbone(model: Any) -> torch.nn.Module:
    """The transformer trunk of a plain or adapter-wrapped model (the module returning `last_hidden_state`).

    A PEFT wrapper's own `base_model` is its tuner, not the trunk, so stages that read hidden states use this."""
    return plain_model(model).base_model


def wrapped_module(model: Any) -> torch.nn.Module | None:
    """The model inside a DistributedDataParallel / DeepSpeed engine (`.module`), or None for a model as is."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else None


def as_forward(model: Any, fn: Any, *args: Any) -> Any:
    """`fn(m, *args)` with `m` the model itself. For a model inside a DDP / DeepSpeed wrapper, `fn` runs as the
    wrapped module's forward through the wrapper's own call, so that the wrapper's gradient synchronisation and
    hooks see this computation as they see `model(...)`: stages that read hidden states (and project only some
    positions) cannot call the wrapper's forward, which computes every logit, nor bypass it."""
    inner = wrapped_module(model)
    if inner is None:
        return fn(model, *args)
    own = inner.__dict__.get("forward")  # accelerate may have set one (its autocast wrapper)
    inner.forward = lambda *a: fn(inner, *a)
    try:
        return model(*args)
    finally:
        if own is None:
            del inner.forward
        else:
            inner.forward = own


@contextlib.contextmanager
def base_weights(model: Any) -> Iterator[Any]:
    """`model` with its adapter switched off, i.e. the frozen initial weights (the DPO/PPO reference); a model
    without an adapter is yielded unchanged."""
    if is_peft_model(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


@contextlib.contextmanager
def frozen_base(model: Any) -> Iterator[Any]:
    """`base_weights(model)` in eval mode (no dropout) and without gradients: the reference model of DPO and PPO
    computed from the policy itself, equal to a frozen copy of the initial policy."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), base_weights(model):
            yield model
    finally:
        model.train(was)


def is_quantized(model: Any) -> bool:
    """True for a model loaded with quantized (e.g. 4-bit) weights, which cannot be moved with `.to()`."""
    return getattr(plain_model(model), "hf_quantizer", None) is not None


# ---------------------------------------------------------------------------------------------------- wrapping

@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence the FutureWarning peft triggers on every wrap/load (it probes a deprecated transformers property)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def require_peft() -> None:
    """One line instead of an ImportError when the peft package is missing."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise FlanmixError("LoRA needs the peft package", field="peft", expected="pip install peft") from None


def check_qlora(settings: PeftSettings | None) -> None:
    """Refuse QLoRA where it cannot run: 4-bit bitsandbytes weights need a CUDA GPU and the bitsandbytes package."""
    if settings is None or not settings.qlora:
        return
    if not torch.cuda.is_available():
        raise FlanmixError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit weights); none is available",
                           field="peft.qlora", expected="qlora: false (plain LoRA) on this machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise FlanmixError("QLoRA needs the bitsandbytes package", field="peft.qlora",
                           expected="pip install bitsandbytes") from None


def quantization_kwargs(settings: PeftSettings | None) -> dict[str, Any]:
    """`from_pretrained` keyword arguments that load the base in 4-bit NF4 for QLoRA (empty without QLoRA): double
    quantisation, bf16 compute, the whole model on this process's GPU."""
    if settings is None or not settings.qlora:
        return {}
    check_qlora(settings)
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    return {"quantization_config": quant, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def load_quantized(path: str | Path, settings: PeftSettings):
    """The causal LM of a QLoRA run with 4-bit base weights on the GPU (a full model folder, not an adapter)."""
    from transformers import AutoModelForCausalLM

    if is_adapter_dir(path):
        raise FlanmixError("QLoRA quantizes a full model folder, not an adapter", file=path, field="peft.qlora",
                           expected="a merged folder (flanmix merge-adapter) as the model")
    path = check_model_dir(path)
    try:
        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.bfloat16,
                                                    **quantization_kwargs(settings))
    except Exception as err:  # transformers and bitsandbytes raise many types
        raise FlanmixError(f"cannot load the 4-bit model: {str(err).splitlines()[0][:200]}", file=path,
                           field="peft.qlora") from None


def check_targets(model: torch.nn.Module, targets: list[str] | str) -> None:
    """Every requested LoRA target must name modules of the model (PEFT's rule: a full name or a dotted suffix; a
    string other than 'all-linear' is a regular expression over full names)."""
    names = [n for n, _ in model.named_modules() if n]
    if targets == "all-linear":
        return
    if isinstance(targets, str):
        missing = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
    else:
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"})
        raise FlanmixError(f"LoRA target module(s) {', '.join(missing)} not found in {type(model).__name__}",
                           field="peft.target_modules",
                           expected="'all-linear' or some of: " + ", ".join(leaves[:12]))


def wrap(model: torch.nn.Module, settings: PeftSettings, *, base_path: str | Path, scalar: bool = False):
    """The PEFT model training a LoRA adapter on `model` (frozen); `scalar` marks a reward model or critic, whose
    scalar head then trains in full alongside the adapter. `base_path` is recorded in the adapter's config (as an
    absolute path), so the saved adapter finds its base from any working directory."""
    require_peft()
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    check_targets(model, settings.target_modules)
    encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    extra = list(settings.modules_to_save)
    if scalar:  # the head trains in full whatever PEFT's defaults for SEQ_CLS are
        extra += [h for h in SCALAR_HEADS if isinstance(getattr(model, h, None), torch.nn.Module) and h not in extra]
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, modules_to_save=extra or None, bias="none",
                        task_type=SCALAR if scalar else SEQ2SEQ_LM if encoder_decoder else CAUSAL_LM)
    if settings.qlora:
        # fp32 norms and head, inputs that require grad; the loop enables gradient checkpointing itself
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    try:
        with quiet_peft():
            peft_model = get_peft_model(model, config)
    except ValueError as err:  # e.g. a target that is not a layer type LoRA supports
        raise FlanmixError(f"cannot add LoRA: {str(err).splitlines()[0][:200]}", field="peft.target_modules") from None
    peft_model.peft_config["default"].base_model_name_or_path = str(Path(base_path).resolve())
    return peft_model


def trainable_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters the optimizer updates (the adapter, and any module trained in full)."""
    return {n for n, p in model.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------------------------------------- adapter folders

def is_adapter_dir(path: str | Path) -> bool:
    """True for a folder holding a PEFT adapter (as a LoRA run's `final/` does)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> tuple[Path, str]:
    """(base model folder, task type) recorded in an adapter folder's config."""
    cfg = read_json(Path(path) / ADAPTER_CONFIG, what="adapter config")
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not base:
        raise FlanmixError("adapter config names no base model", file=Path(path) / ADAPTER_CONFIG,
                           field="base_model_name_or_path")
    base_dir = Path(base) if Path(base).is_absolute() else (Path(path) / base)
    if not base_dir.is_dir() and Path(base).is_dir():
        base_dir = Path(base)
    if not base_dir.is_dir():
        raise FlanmixError("the adapter's base model folder is missing", file=base,
                           field="base_model_name_or_path", expected="the folder the adapter was trained on")
    return base_dir, cfg.get("task_type") or CAUSAL_LM


def tokenizer_dir(path: str | Path) -> Path:
    """Where an adapter folder's tokenizer is: in the folder (flanmix saves it there), else with the base."""
    path = Path(path)
    return path if (path / "tokenizer_config.json").is_file() else adapter_base(path)[0]


def load_merged(path: str | Path, *, base: str | Path | None = None, scalar: bool | None = None):
    """The full model of an adapter folder: its base (or `base`) with the adapter merged in. A reward-model or
    critic adapter gives a one-label scalar-head model, a policy adapter a causal LM; `scalar=True` puts a policy
    adapter's trunk under a (fresh) scalar head instead, as an rm stage or a critic started from it needs."""
    require_peft()
    from peft import PeftModel

    base_dir, task = adapter_base(path)
    base_dir = Path(base) if base is not None else base_dir
    scalar = task == SCALAR if scalar is None else scalar
    if is_adapter_dir(base_dir):  # an adapter trained on top of another run's adapter (a LoRA pipeline)
        model = load_merged(base_dir, scalar=scalar)
    elif scalar:
        model = scalar_base(base_dir, load_tokenizer(tokenizer_dir(path)).pad_token_id)
    else:
        model = models.load_model(base_dir)  # decoder-only or encoder-decoder
    try:
        with quiet_peft():
            merged = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except Exception as err:  # a missing/corrupt adapter file, or an adapter made for another base
        raise FlanmixError(f"cannot apply the adapter: {str(err).splitlines()[0][:200]}", file=path) from None
    if scalar:
        merged.config.pad_token_id = model.config.pad_token_id
    return merged


def stored_dtype(model_dir: str | Path) -> torch.dtype:
    """The precision a model folder's weights are stored in (config.json's dtype; fp32 when it names none); for
    an adapter folder, its base's."""
    if is_adapter_dir(model_dir):
        return stored_dtype(adapter_base(model_dir)[0])
    saved = read_json(Path(model_dir) / "config.json", what="model config")
    dtype = getattr(torch, str(saved.get("dtype") or saved.get("torch_dtype") or "float32"), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def scalar_base(path: str | Path, pad_token_id: int | None):
    """A one-label sequence-classification model over the causal-LM folder `path` (the head is overwritten by the
    adapter's saved copy)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score head newly initialised": the adapter brings the trained one
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            check_model_dir(path), num_labels=1, pad_token_id=pad_token_id, local_files_only=True)
    except Exception as err:
        raise FlanmixError(f"cannot build a scalar-head model: {str(err).splitlines()[0][:200]}", file=path) from None
    finally:
        hf_logging.set_verbosity(verbosity)


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, *, base: str | Path | None = None,
                  overwrite: bool = False) -> list[Path]:
    """Write the merged full model of `adapter_dir` (and of its `critic/` adapter, from a PPO run) to `out_dir` as
    plain transformers folders, atomically; returns the folders written."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not is_adapter_dir(adapter_dir):
        raise FlanmixError("not an adapter folder (no adapter_config.json)", file=adapter_dir,
                           expected="the final/ folder of a run with a peft: block")
    if out_dir.exists() and not overwrite:
        raise FlanmixError("output folder exists", file=out_dir, expected="a new folder, or --overwrite")
    parts = [(adapter_dir, Path("."))]
    if is_adapter_dir(adapter_dir / "critic"):
        parts.append((adapter_dir / "critic", Path("critic")))
    with atomic_dir(out_dir, replace=overwrite) as tmp:
        for src, rel in parts:
            merged = load_merged(src, base=base if rel == Path(".") else None)
            # merged in fp32, stored in the base's own precision
            merged = merged.to(stored_dtype(base if base is not None and rel == Path(".") else adapter_base(src)[0]))
            dest = tmp / rel
            merged.save_pretrained(dest, safe_serialization=True)
            load_tokenizer(tokenizer_dir(src)).save_pretrained(dest)
    return [out_dir / rel for _, rel in parts]


def load_model_and_tokenizer(path: str | Path, *, peft: PeftSettings | None = None, **kwargs: Any):
    """`trainers.models.load_model_and_tokenizer`, also for an adapter folder (merged into its base) and for QLoRA
    (4-bit base weights); `kwargs` go to the plain loader (tokenizer, dtype, attn_implementation)."""
    check_qlora(peft)  # before anything is loaded
    if not (is_adapter_dir(path) or (peft is not None and peft.qlora)):
        return models.load_model_and_tokenizer(path, **kwargs)
    tokenizer = load_tokenizer(kwargs.get("tokenizer") or (tokenizer_dir(path) if is_adapter_dir(path) else path))
    model = load_quantized(path, peft) if peft is not None and peft.qlora else load_merged(path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer

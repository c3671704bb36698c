"""Supervised fine-tuning: next-token loss on completion tokens only, on the shared loop.

    from trainers.sft import train
    train({"model": "runs/tiny", "data": "out/demo", "output_dir": "runs/sft", "packing": True})

Reads flanmix mixture output (a folder of *.parquet shards + manifest.json) or a Parquet/JSONL file with
inputs/targets, prompt/completion or chat `messages` rows (see trainers.data). The loss of a step is the mean
over all completion tokens of the global batch (sum of token losses / number of tokens), so packing, padding,
gradient accumulation and the number of processes do not change it.

Any architecture `trainers.models` loads: a decoder-only model reads prompt + completion as one sequence (packed
when `packing` is on and the model keeps packed documents apart: `trainers.packing.keeps_documents_apart`); an
encoder-decoder (T5) reads the prompt with its encoder and the target with its decoder (`trainers.seq2seq`), in
length-grouped batches and never packed.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from flanmix.core.atomic import write_text
from flanmix.core.errors import FlanmixError
from trainers import loop, seq2seq
from trainers.adapters import load_model_and_tokenizer, plain_model, wrap
from trainers.config import AdapterField, LoopSettings, is_main_process, parse_config, write_run_info
from trainers.data import IGNORE, read_rows, tokenize_rows
from trainers.losses.sft import completion_nll
from trainers.models import is_encoder_decoder
from trainers.packing import collate_packed, collate_padded, keeps_documents_apart, pack_greedy
from trainers.protocol import Stage, TrainResult


class SFTConfig(LoopSettings, AdapterField):
    """`flanmix train sft --config sft.yaml`: the loop settings plus these."""

    model: str                                # local model folder (init-model output or any transformers folder)
    tokenizer: str | None = None              # default: the model folder
    data: str                                 # mixture folder, .parquet or .jsonl
    eval_data: str | None = None
    max_rows: int | None = Field(None, ge=1)  # use only the first N rows (quick runs)
    max_length: int = Field(512, ge=2)
    truncation: Literal["truncate", "drop"] = "truncate"
    packing: bool = False                     # decoder-only models only (encoder-decoders are never packed)
    chat: bool = False                        # every row through the chat template (messages, or inputs/targets as
                                              # a user + an assistant turn); loss on assistant turns only
    packing_mask: Literal["position_ids", "4d"] = "position_ids"
    attn_implementation: str | None = None    # e.g. sdpa | eager | flash_attention_2
    lr: float = Field(1e-3, gt=0)
    group_by_length: bool = True              # unpacked: batches of similar length, little padding


def token_loss(model, batch: dict, *, select: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over positions with labels != -100 (labels already shifted) and the token count.

    With select=True, logits are computed only at those positions (transformers' boolean `logits_to_keep`),
    which skips the vocabulary projection for prompt and padding tokens.
    """
    labels = batch["labels"]
    keep = labels != IGNORE
    kwargs = {"input_ids": batch["input_ids"], "use_cache": False}
    for k in ("attention_mask", "position_ids"):
        if k in batch:
            kwargs[k] = batch[k]
    if select:
        logits = model(**kwargs, logits_to_keep=keep).logits
        targets = labels[keep]
    else:
        logits = model(**kwargs).logits
        logits, targets = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    return completion_nll(logits, targets), keep.sum()


class SFTStage(Stage):
    """Supervised fine-tuning stage (see trainers.protocol)."""

    name = "sft"

    def __init__(self, cfg: SFTConfig, *, model=None, tokenizer=None, verbose: bool = True):
        self.cfg = cfg
        if model is None:
            model, tokenizer = load_model_and_tokenizer(cfg.model, tokenizer=cfg.tokenizer, peft=cfg.peft,
                                                        attn_implementation=cfg.attn_implementation)
        if cfg.peft is not None:  # LoRA: the base is frozen, the adapter trains (trainers.adapters)
            model = wrap(model, cfg.peft, base_path=cfg.model)
        self.model, self.tokenizer = model, tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.seq2seq = is_encoder_decoder(model)
        self.start_id = seq2seq.decoder_start_id(model) if self.seq2seq else None
        self.select = "logits_to_keep" in inspect.signature(type(plain_model(model)).forward).parameters
        self.notes: list[str] = []
        self.packing_mask = cfg.packing_mask
        self.packing = cfg.packing and self._can_pack()
        self.train_examples, self.stats = self._load(cfg.data)
        self.notes += getattr(self.stats, "notes", [])
        self.eval_examples = self._load(cfg.eval_data)[0] if cfg.eval_data else None
        if self.packing:
            self.items = self._pack(self.train_examples)
            self.eval_items = self._pack(self.eval_examples) if self.eval_examples else None
        else:
            self.items, self.eval_items = self.train_examples, self.eval_examples
        self._lengths = [self._len(it) for it in self.items]
        if verbose and is_main_process():
            s = self.stats
            packed = f", packed into {len(self.items)} rows" if self.packing else ""
            long = f" ({s.prompt_too_long} with a prompt longer than max_length)" if s.prompt_too_long else ""
            for note in self.notes:
                print(f"[sft] note: {note}", flush=True)
            print(f"[sft] {s.rows} rows: {s.kept} kept, {s.truncated} truncated, {s.dropped} dropped{long} "
                  f"(max_length {cfg.max_length}); {s.tokens} tokens, {s.trained_tokens} trained{packed}",
                  flush=True)

    def _can_pack(self) -> bool:
        """Whether packing is safe for this model: never for an encoder-decoder; for a decoder-only model the
        configured mask mode, else the other one, if `keeps_documents_apart` says so (a note either way)."""
        mtype = getattr(self.model.config, "model_type", type(self.model).__name__)
        if self.seq2seq:
            self.notes.append(f"{mtype} is an encoder-decoder: no packing (length-grouped batches instead)")
            return False
        first = self.cfg.packing_mask
        for mode in (first, "4d" if first == "position_ids" else "position_ids"):
            if keeps_documents_apart(self.model, mode):
                if mode != first:
                    self.notes.append(f"{mtype} does not separate packed documents by {first}; packing with {mode}")
                self.packing_mask = mode
                return True
        self.notes.append(f"{mtype} mixes packed documents under either mask; training unpacked")
        return False

    def _load(self, path):
        rows = read_rows(path)
        if self.cfg.max_rows:
            rows = rows[: self.cfg.max_rows]
        tokenize = seq2seq.tokenize_rows if self.seq2seq else tokenize_rows
        chat = {"chat": True} if self.cfg.chat else {}  # decoder-only (trainers.chat)
        if chat and self.seq2seq:
            raise FlanmixError("chat: true needs a decoder-only model with a chat template", field="chat")
        return tokenize(self.tokenizer, rows, max_length=self.cfg.max_length, truncation=self.cfg.truncation,
                        source=path, **chat)

    def _pack(self, examples):
        rows = pack_greedy([len(e["input_ids"]) for e in examples], self.cfg.max_length)
        return [[examples[i] for i in row] for row in rows]

    def _len(self, item) -> int:
        if self.packing:
            return sum(len(d["input_ids"]) for d in item)
        if self.seq2seq:
            return len(item["input_ids"]) + len(item["labels"])
        return len(item["input_ids"])

    # -- protocol
    def train_dataset(self):
        return self.items

    def eval_dataset(self):
        return self.eval_items

    def lengths(self):
        return self._lengths

    def collate(self, items) -> dict:
        if self.seq2seq:
            return seq2seq.collate(items, self.pad_id, self.start_id)
        if self.packing:
            batch = collate_packed(items, self.pad_id, mask=self.packing_mask)
            batch["num_tokens"] = sum(self._len(it) for it in items)
        else:
            batch = collate_padded(items, self.pad_id)
        return batch

    def count(self, batch) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def loss(self, model, batch):
        if self.seq2seq:
            loss, _ = seq2seq.token_loss(model, batch)
        else:
            loss, _ = token_loss(model, batch, select=self.select)
        return loss, {}


def train(config: SFTConfig | dict | str | Path, **overrides: Any) -> TrainResult:
    """Run SFT from a config object, a dict, or a YAML path; keyword overrides win over the file."""
    cfg = parse_config(config, SFTConfig, overrides)
    stage = SFTStage(cfg)
    write_run_info(cfg, "sft")
    if is_main_process():
        write_text(Path(cfg.output_dir) / "data_stats.json", json.dumps(stage.stats.as_dict(), indent=1))
    return loop.train(stage, cfg)

"""Reading training files and turning rows into token ids with a loss mask.

Row shapes (first match wins):
    inputs / targets        flanmix mixture rows (a folder of *.parquet shards + manifest.json, or one file)
    prompt / completion     plain prompt-completion pairs
    messages                chat: a list of {"role", "content"}; loss on assistant turns only (`trainers.chat`)
    conversations           ShareGPT chat: a list of {"from", "value"} (+ optional "system")

With `chat=True` (SFT's `chat: true`) every row goes through the tokenizer's chat template: its `messages` column
(as `flanmix build --messages` writes it), or inputs/targets as one user and one assistant message.

The prompt/completion boundary. A BPE tokenizer may merge characters across the boundary when prompt+completion is
tokenized as one string, so "the prompt's tokens" would no longer be a prefix of the joint tokenization, and the
model would be trained on a token sequence it never sees at inference (where the prompt is tokenized alone and the
completion generated after it). We therefore tokenize each segment separately (prompt exactly as inference does,
BOS included if the tokenizer adds one) and concatenate the ids (`prompt_completion_ids`: the one rule that SFT
and every preference stage use). `check_prefix` verifies the invariant on the result. EOS is appended to every
trained segment as an id (never as text), so it is in the labels even when pad == eos: masking is driven by the
labels we build, never by comparing ids to pad.

Flan rows (`inputs`/`targets`) are stored stripped, as the Flan collection stores them. A decoder-only model reads
them as one text, so the completion is `TARGET_DELIMITER + targets` (a space, as in lm-evaluation-harness): the
answer then tokenizes the same way at the end of a few-shot prompt ("A:" + " 39") as inside its exemplars
("A: 39"). `prompt`/`completion` rows are taken verbatim: their author chose the spacing.

Labels are returned *unshifted* (`labels[t]` is the target for token t, -100 = not trained); collators shift them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from flanmix.core.constants import TARGET_DELIMITER
from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import iter_jsonl
from flanmix.preferences import read_rows as read_json_rows
from trainers.chat import (
    chat_segments,
    check_messages,
    ensure_chat_template,
    render_chat,
    response_turn,
    sharegpt_messages,
)

IGNORE = -100
Truncation = Literal["truncate", "drop"]


# ----------------------------------------------------------------------------------------------------------- files

def data_files(path: str | Path) -> list[Path]:
    """The data files behind `path`: a file, or a folder's *.parquet / *.jsonl shards (sorted)."""
    path = Path(path)
    if not path.exists():
        raise FlanmixError("data path not found", file=path)
    if path.is_file():
        return [path]
    shard_dir = path / "shards" if (path / "shards").is_dir() else path
    files = sorted(shard_dir.glob("*.parquet")) or sorted(shard_dir.glob("*.jsonl")) or sorted(path.rglob("*.parquet"))
    if not files:
        raise FlanmixError("no *.parquet or *.jsonl files in folder", file=path)
    return files


def read_rows(path: str | Path, columns: Sequence[str] | None = None) -> list[dict]:
    """All rows of a Parquet/JSONL file or shard folder as dicts (optionally only `columns`)."""
    rows: list[dict] = []
    for f in data_files(path):
        if f.suffix == ".parquet":
            try:
                table = pq.read_table(f, columns=[c for c in (columns or []) if c in pq.read_schema(f).names] or None)
            except Exception as err:  # pyarrow raises many types for a corrupt file
                raise FlanmixError(f"cannot read Parquet file: {err}", file=f) from err
            rows.extend(table.to_pylist())
        elif f.suffix == ".json":  # a JSON list (ShareGPT / Alpaca files) or JSON lines
            for row, where in read_json_rows(f):
                if not isinstance(row, dict):
                    raise FlanmixError(f"{where}: each row must be a JSON object", file=f)
                rows.append({k: row[k] for k in columns if k in row} if columns else row)
        elif f.suffix == ".jsonl":
            rows.extend({k: row[k] for k in columns if k in row} if columns else row for _, row in iter_jsonl(f))
        else:
            raise FlanmixError("unsupported data file type", file=f, expected=".parquet or .jsonl")
    return rows


def detect_format(columns: Iterable[str], *, source: str | Path | None = None) -> str:
    """'inputs_targets' | 'prompt_completion' | 'messages' | 'sharegpt' from the available column names."""
    cols = set(columns)
    if {"inputs", "targets"} <= cols:
        return "inputs_targets"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if "messages" in cols:
        return "messages"
    if "conversations" in cols:
        return "sharegpt"
    raise FlanmixError(f"missing columns; found {sorted(cols)}", file=source,
                       expected="inputs+targets, prompt+completion, messages or conversations")


# ---------------------------------------------------------------------------------------------------- tokenization

@dataclass
class TokenStats:
    """What happened to the rows while tokenizing (logged by the SFT stage)."""

    rows: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: int = 0
    prompt_too_long: int = 0      # dropped under `truncate` because the prompt alone fills max_length
    tokens: int = 0
    trained_tokens: int = 0
    max_len_seen: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "notes"}


def adds_bos(tokenizer) -> bool:
    """True if `tokenizer(text)` prepends BOS by itself (Llama-style); then we prepend it to every example."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return len(ids) > 0 and ids[0] == bos


def tokenize_segments(tokenizer, segments: Sequence[tuple[str, bool]], *, bos: bool | None = None,
                      eos_after_trained: bool = True) -> tuple[list[int], list[int]]:
    """Token ids and (unshifted) labels for alternating text segments `(text, trained)`.

    Each segment is tokenized on its own (no special tokens) and the ids concatenated, so the ids of the untrained
    prefix are exactly what tokenizing the prompt alone gives. EOS is appended after each trained segment.
    """
    if bos is None:
        bos = adds_bos(tokenizer)
    eos = tokenizer.eos_token_id
    ids: list[int] = [tokenizer.bos_token_id] if bos else []
    labels: list[int] = [IGNORE] * len(ids)
    for text, trained in segments:
        seg = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        if trained and eos_after_trained:
            seg = seg + [eos]
        ids.extend(seg)
        labels.extend(seg if trained else [IGNORE] * len(seg))
    return ids, labels


def prompt_ids(tokenizer, prompt: str | list[dict], *, bos: bool | None = None) -> list[int]:
    """The ids of a prompt as inference sees it: BOS (if the tokenizer adds one), then the prompt's own tokens; a
    conversation (list of messages) through the chat template (`chat_prompt_ids`)."""
    if not isinstance(prompt, str):
        return chat_prompt_ids(tokenizer, prompt)
    if bos is None:
        bos = adds_bos(tokenizer)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    return [tokenizer.bos_token_id] + ids if bos else ids


def completion_ids(tokenizer, completion: str) -> list[int]:
    """The ids of a completion, tokenized on its own (no special tokens), then EOS."""
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"] if completion else []
    return ids + [tokenizer.eos_token_id]


def prompt_completion_ids(tokenizer, prompt: str, completion: str, *, bos: bool | None = None
                          ) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids + EOS): the one rule for joining a prompt and a completion, used by SFT and every
    preference stage (RM, DPO, RRHF, PPO). Each part is tokenized separately (see the module docstring), so the
    prompt's ids are exactly `prompt_ids(tokenizer, prompt)` whatever follows."""
    return prompt_ids(tokenizer, prompt, bos=bos), completion_ids(tokenizer, completion)


def tokenize_prompt_completion(tokenizer, prompt: str, completion: str, *, bos: bool | None = None
                               ) -> tuple[list[int], list[int]]:
    """ids/labels for one prompt-completion pair (`prompt_completion_ids`); labels are IGNORE on the prompt."""
    p, c = prompt_completion_ids(tokenizer, prompt, completion, bos=bos)
    return p + c, [IGNORE] * len(p) + c


def check_prefix(tokenizer, prompt: str, ids: Sequence[int], *, bos: bool | None = None) -> None:
    """Raise if the ids of `prompt` tokenized alone (as at inference) are not a prefix of `ids`."""
    p = prompt_ids(tokenizer, prompt, bos=bos)
    if list(ids[: len(p)]) != p:
        raise FlanmixError("prompt tokens are not a prefix of the example's tokens", field="prompt")


def chat_ids(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """ids/labels of a conversation through the chat template, loss on the assistant turns only (`trainers.chat`).

    Each segment is tokenized on its own, so the ids before an assistant turn are exactly those of the rendered
    prompt (`prompt_ids(tokenizer, messages[:i])`). The template decides about BOS (it writes it as text; we turn it
    into the id) and ends each turn (EOS as text tokenizes to the EOS id), as apply_chat_template(tokenize=True)
    does at inference."""
    segs = chat_segments(tokenizer, messages)
    if not any(trained for _, trained, _ in segs):
        raise FlanmixError("empty loss mask (no assistant turn)", field="messages")
    text0, bos = strip_template_bos(tokenizer, segs[0][0])
    segs[0] = (text0, *segs[0][1:])
    ids: list[int] = [tokenizer.bos_token_id] if bos else []
    labels: list[int] = [IGNORE] * len(ids)
    for text, trained, eos in segs:
        seg = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        if eos:
            seg = seg + [tokenizer.eos_token_id]
        ids.extend(seg)
        labels.extend(seg if trained else [IGNORE] * len(seg))
    return ids, labels


def strip_template_bos(tokenizer, text: str) -> tuple[str, bool]:
    """(text without a leading BOS written by the chat template, whether it had one)."""
    bos_text = tokenizer.bos_token
    if bos_text and text.startswith(bos_text):
        return text[len(bos_text):], True
    return text, False


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The ids of a conversational prompt as inference gives it to the model: the template's rendering with the
    generation prompt (BOS only if the template writes it), the same ids `chat_ids` puts before that turn."""
    text, bos = strip_template_bos(tokenizer, render_chat(tokenizer, messages, generation_prompt=True))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    return [tokenizer.bos_token_id] + ids if bos else ids


def response_ids(tokenizer, prompt: str | list[dict], response: str | list[dict]) -> list[int]:
    """The ids of a response after `prompt` (a preference response, a PPO pretraining row): after a string prompt,
    the completion text + EOS (`completion_ids`); after a conversation, the next assistant turn by the chat rule
    (`trainers.chat.response_turn`), so a chosen answer gets the ids an SFT chat row would train."""
    if isinstance(prompt, str):
        text = response if isinstance(response, str) else "\n".join(str(m["content"]) for m in response)
        return completion_ids(tokenizer, text)
    text, eos = response_turn(tokenizer, prompt, response)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    return ids + [tokenizer.eos_token_id] if eos else ids


def row_messages(row: dict) -> list[dict]:
    """A row as a conversation (SFT with `chat: true`): its `messages`, its ShareGPT `conversations`, or its
    inputs/targets (prompt/completion) as one user and one assistant message."""
    if isinstance(row.get("messages"), list):
        return row["messages"]
    if "conversations" in row:
        return sharegpt_messages(row)
    fmt = detect_format(row.keys())
    pk, ck = ("inputs", "targets") if fmt == "inputs_targets" else ("prompt", "completion")
    return [{"role": "user", "content": _text(row, pk)}, {"role": "assistant", "content": _text(row, ck)}]


def row_to_ids(tokenizer, row: dict, fmt: str, *, bos: bool) -> tuple[list[int], list[int]]:
    """ids/labels of one row of a given format (see `detect_format`; "chat": any row through the chat template)."""
    if fmt in ("inputs_targets", "prompt_completion"):
        pk, ck = ("inputs", "targets") if fmt == "inputs_targets" else ("prompt", "completion")
        completion = _text(row, ck)
        if not completion:
            # Only EOS would be trained: almost always a data bug, so it is an error rather than a silent row.
            raise FlanmixError("empty loss mask (empty completion)", field=ck)
        if fmt == "inputs_targets":
            completion = TARGET_DELIMITER + completion
        return tokenize_prompt_completion(tokenizer, _text(row, pk), completion, bos=bos)
    if fmt == "sharegpt":
        return chat_ids(tokenizer, sharegpt_messages(row))
    return chat_ids(tokenizer, row_messages(row) if fmt == "chat" else check_messages(row.get("messages")))


def _text(row: dict, key: str) -> str:
    v = row.get(key)
    if not isinstance(v, str):
        raise FlanmixError(f"must be a string, got {type(v).__name__}", field=key)
    return v


def tokenize_rows(
    tokenizer,
    rows: Sequence[dict],
    *,
    max_length: int,
    truncation: Truncation = "truncate",
    source: str | Path | None = None,
    chat: bool = False,
) -> tuple[list[dict], TokenStats]:
    """Tokenize every row into {"input_ids", "labels"} (unshifted, -100 = untrained).

    With `chat`, every row goes through the chat template (`row_messages`: its messages, or inputs/targets as a
    user and an assistant turn); conversational rows (messages, conversations) always do.
    Rows longer than `max_length` are cut at the end (`truncate`) or skipped (`drop`); both are counted. Under
    `truncate`, a row whose prompt alone fills max_length is skipped and counted as dropped (`prompt_too_long`). A
    row with no trained token otherwise (empty completion, no assistant turn) is a FlanmixError naming the row.
    """
    if truncation not in ("truncate", "drop"):
        raise FlanmixError(f"unknown truncation {truncation!r}", field="truncation", expected="truncate | drop")
    stats = TokenStats()
    if not rows:
        raise FlanmixError("dataset is empty", file=source)
    fmt = "chat" if chat else detect_format(rows[0].keys(), source=source)
    if fmt in ("chat", "messages", "sharegpt") and ensure_chat_template(tokenizer):
        stats.notes.append("the tokenizer has no chat template: using flanmix's default (<|role|> lines), saved "
                           "with the model")
    bos = adds_bos(tokenizer)
    out: list[dict] = []
    for i, row in enumerate(rows):
        stats.rows += 1
        try:
            ids, labels = row_to_ids(tokenizer, row, fmt, bos=bos)
        except FlanmixError as err:
            raise FlanmixError(f"row {i}: {err.message}", file=source, field=err.field, expected=err.expected) from err
        stats.max_len_seen = max(stats.max_len_seen, len(ids))
        if len(ids) > max_length:
            if truncation == "drop":
                stats.dropped += 1
                continue
            stats.truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        n_trained = sum(1 for t in labels[1:] if t != IGNORE)  # label 0 has no preceding token to predict from
        if n_trained == 0:
            if len(ids) == max_length:
                # The prompt alone fills max_length: truncation left nothing to learn. A length problem, not a
                # data bug: the row is dropped and counted (truncated -> prompt_too_long).
                stats.truncated -= 1
                stats.dropped += 1
                stats.prompt_too_long += 1
                continue
            raise FlanmixError(f"row {i} has an empty loss mask", file=source,
                               expected="a non-empty completion")
        stats.kept += 1
        stats.tokens += len(ids)
        stats.trained_tokens += n_trained
        out.append({"input_ids": ids, "labels": labels})
    if not out:
        raise FlanmixError(f"all {stats.rows} rows were dropped as longer than max_length={max_length}",
                           file=source, field="max_length")
    return out, stats

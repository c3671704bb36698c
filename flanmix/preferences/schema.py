"""Preference rows: pairs and k-way rankings, plain text or chat `messages`, normalised to one `Group`.

Two row shapes (JSONL, one object a line):

- pair:    ``{"prompt": ..., "chosen": ..., "rejected": ..., "margin": 0.5?}``
- ranking: ``{"prompt": ..., "responses": [...], "scores": [...]}`` (higher score = better)

``prompt`` is a string or a list of chat messages (``{"role", "content"}``); a response is a string, one assistant
message, or a list of messages. ``messages`` is accepted as a synonym of a conversational ``prompt``.

Both shapes are normalised to one `Group` (prompt, responses, scores, margin); a pair is the ranking
``[chosen, rejected]`` with scores ``[1, 0]``. Every stage then reads the *pairs* of a group — all ``(i, j)`` with
``score_i > score_j`` — so the reward model, DPO and RRHF see pairs and rankings the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flanmix.core.errors import FlanmixError


@dataclass
class Group:
    """One prompt with its k ≥ 2 responses, their scores (higher is better) and an optional pair margin."""

    prompt: Any
    responses: list
    scores: list[float]
    margin: float | None = None
    source: str | None = None  # "file:line" for error messages

    def pairs(self) -> list[tuple[int, int]]:
        """All (better, worse) index pairs; ties give none."""
        k = len(self.responses)
        return [(i, j) for i in range(k) for j in range(k) if self.scores[i] > self.scores[j]]


def is_messages(x: Any) -> bool:
    """Whether `x` is a chat: a list of `{role, content}` messages."""
    return isinstance(x, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in x)


def response_text(x: Any) -> str:
    """The text a response carries, for emptiness / identity checks."""
    if isinstance(x, str):
        return x
    if isinstance(x, dict) and "content" in x:
        return str(x["content"])
    if is_messages(x):
        return "\n".join(str(m["content"]) for m in x)
    raise ValueError("not a response")


def _norm_response(x: Any, where: str, fld: str) -> Any:
    if isinstance(x, dict) and "content" in x:
        x = [{"role": x.get("role", "assistant"), "content": x["content"]}]
    if not (isinstance(x, str) or is_messages(x)):
        raise FlanmixError("a response must be a string or a list of {role, content} messages",
                           file=where, field=fld)
    if not response_text(x).strip():
        raise FlanmixError("empty response", file=where, field=fld, expected="non-empty text")
    return x


def row_to_group(row: dict, where: str = "<row>") -> Group:
    """Validate one pair or ranking row and normalise it to a `Group`. Raises FlanmixError on bad input."""
    if not isinstance(row, dict):
        raise FlanmixError("a preference row must be a JSON object", file=where)
    prompt = row.get("prompt", row.get("messages"))
    if prompt is None:
        raise FlanmixError("missing prompt", file=where, field="prompt", expected="'prompt' or 'messages'")
    if not (isinstance(prompt, str) or is_messages(prompt)):
        raise FlanmixError("prompt must be a string or a list of {role, content} messages", file=where,
                           field="prompt")
    if "chosen" in row or "rejected" in row:
        if "chosen" not in row or "rejected" not in row:
            raise FlanmixError("a pair needs both 'chosen' and 'rejected'", file=where)
        chosen = _norm_response(row["chosen"], where, "chosen")
        rejected = _norm_response(row["rejected"], where, "rejected")
        if response_text(chosen).strip() == response_text(rejected).strip():
            raise FlanmixError("chosen is identical to rejected", file=where, field="rejected",
                               expected="a different response")
        margin = row.get("margin")
        if margin is not None and not (isinstance(margin, (int, float)) and math.isfinite(margin)):
            raise FlanmixError("margin must be a finite number", file=where, field="margin")
        return Group(prompt, [chosen, rejected], [1.0, 0.0], None if margin is None else float(margin), where)
    if "responses" in row:
        responses, scores = row["responses"], row.get("scores")
        if not isinstance(responses, list) or len(responses) < 2:
            raise FlanmixError("a ranking needs at least 2 responses", file=where, field="responses")
        if not isinstance(scores, list) or len(scores) != len(responses):
            raise FlanmixError("scores must be a list as long as responses", file=where, field="scores")
        if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in scores):
            raise FlanmixError("scores must be finite numbers", file=where, field="scores")
        responses = [_norm_response(r, where, f"responses[{i}]") for i, r in enumerate(responses)]
        if len(set(scores)) == 1:
            raise FlanmixError("all scores are equal, so the ranking says nothing", file=where, field="scores",
                               expected="at least two different scores")
        return Group(prompt, responses, [float(s) for s in scores], None, where)
    raise FlanmixError("unknown preference row", file=where,
                       expected="prompt+chosen+rejected or prompt+responses+scores")

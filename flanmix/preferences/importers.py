"""Third-party preference sets in shared/data turned into our rows: HH-RLHF transcripts, PandaLM's three human
labels, LLaMA-Factory's ShareGPT pairs. Each importer returns (rows, dropped)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flanmix.core.jsonl import iter_jsonl, open_text

HH_SPLIT = "\n\nAssistant:"


def hh_rlhf_rows(path: str | Path) -> tuple[list[dict], int]:
    """HH-RLHF transcripts split at the last ``\\n\\nAssistant:``; returns (rows, dropped).

    Rows whose two transcripts do not share the prompt, or whose last turns are identical or empty, are dropped.
    """
    path = Path(path)
    rows, dropped = [], 0
    for _, obj in iter_jsonl(path):
        c, r = obj["chosen"], obj["rejected"]
        ic, ir = c.rfind(HH_SPLIT), r.rfind(HH_SPLIT)
        if ic < 0 or ir < 0:
            dropped += 1
            continue
        prompt_c, prompt_r = c[: ic + len(HH_SPLIT)], r[: ir + len(HH_SPLIT)]
        chosen, rejected = c[ic + len(HH_SPLIT):], r[ir + len(HH_SPLIT):]
        if prompt_c != prompt_r or not chosen.strip() or not rejected.strip() or chosen.strip() == rejected.strip():
            dropped += 1
            continue
        rows.append({"prompt": prompt_c, "chosen": chosen, "rejected": rejected})
    return rows, dropped


def pandalm_rows(path: str | Path, vote: str = "unanimous") -> tuple[list[dict], int]:
    """PandaLM human test set: keep rows whose three labels agree and are not a tie (``vote='unanimous'``), or
    a 2-of-3 non-tie majority (``vote='majority'``). Label 1 = response1 better, 2 = response2 better."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rows, dropped = [], 0
    for obj in data:
        labels = [obj.get(f"annotator{i}") for i in (1, 2, 3)]
        if vote == "unanimous":
            winner = labels[0] if labels[0] in (1, 2) and labels.count(labels[0]) == 3 else None
        else:
            winner = next((v for v in (1, 2) if labels.count(v) >= 2), None)
        # a few responses were stored as JSON booleans/numbers (e.g. `true` for "True"): keep them as text
        r1, r2 = (_as_text(obj.get(f"response{i}")) for i in (1, 2))
        if winner is None or not r1.strip() or not r2.strip() or r1.strip() == r2.strip():
            dropped += 1
            continue
        prompt = _as_text(obj["instruction"]) + (f"\n\n{_as_text(obj['input'])}" if obj.get("input") else "")
        chosen, rejected = (r1, r2) if winner == 1 else (r2, r1)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows, dropped


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    return v if isinstance(v, str) else str(v)


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system"}


def sharegpt_rows(path: str | Path) -> tuple[list[dict], int]:
    """LLaMA-Factory ShareGPT pairs → conversational rows (``prompt`` messages, one assistant message each)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rows, dropped = [], 0
    for obj in data:
        msgs = [{"role": _SHAREGPT_ROLES.get(m["from"], m["from"]), "content": m["value"]}
                for m in obj["conversations"]]
        c, r = obj["chosen"]["value"], obj["rejected"]["value"]
        if not c.strip() or not r.strip() or c.strip() == r.strip():
            dropped += 1
            continue
        rows.append({"prompt": msgs, "chosen": [{"role": "assistant", "content": c}],
                     "rejected": [{"role": "assistant", "content": r}]})
    return rows, dropped


IMPORTERS = {"hh-rlhf": hh_rlhf_rows, "pandalm": pandalm_rows, "sharegpt": sharegpt_rows}


def detect_format(path: Path) -> str:
    """'hh-rlhf', 'pandalm', 'sharegpt' or 'rows' (our own JSONL/JSON rows)."""
    with open_text(path) as fh:
        head = fh.read(4096).lstrip()
    if head.startswith("["):
        if '"annotator1"' in head:
            return "pandalm"
        if '"conversations"' in head:
            return "sharegpt"
        return "rows"
    first = head.splitlines()[0] if head else ""
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        return "rows"
    if isinstance(obj, dict) and "prompt" not in obj and "messages" not in obj \
            and isinstance(obj.get("chosen"), str) and obj["chosen"].lstrip().startswith("Human:"):
        return "hh-rlhf"
    return "rows"

"""Third-party preference sets in shared/data turned into our rows: HH-RLHF transcripts, PandaLM's three human
labels, LLaMA-Factory's ShareGPT pairs. Each importer returns (rows, dropped)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import iter_jsonl, read_head, read_json

HH_SPLIT = "\n\nAssistant:"


def _json_list(path: str | Path, what: str) -> list[dict]:
    """A JSON file holding a list of objects (PandaLM, ShareGPT)."""
    data = read_json(path, what=what)
    if not isinstance(data, list) or not all(isinstance(obj, dict) for obj in data):
        raise FlanmixError(f"not a {what}", file=path, expected="a JSON list of objects")
    return data


def _malformed(path: str | Path, where: str, err: Exception, expected: str) -> FlanmixError:
    missing = f"missing field {err}" if isinstance(err, KeyError) else f"malformed row ({err})"
    return FlanmixError(f"{where}: {missing}", file=path, expected=expected)


def hh_rlhf_rows(path: str | Path) -> tuple[list[dict], int]:
    """HH-RLHF transcripts split at the last ``\\n\\nAssistant:``; returns (rows, dropped).

    Rows whose two transcripts do not share the prompt, or whose last turns are identical or empty, are dropped.
    """
    path = Path(path)
    rows, dropped = [], 0
    for line, obj in iter_jsonl(path):
        c, r = obj.get("chosen"), obj.get("rejected")
        if not isinstance(c, str) or not isinstance(r, str):
            raise FlanmixError("an HH-RLHF row needs string 'chosen' and 'rejected' transcripts", file=path, line=line)
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
    data = _json_list(path, "PandaLM file")
    rows, dropped = [], 0
    for index, obj in enumerate(data):
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
        if "instruction" not in obj:
            raise _malformed(path, f"row {index}", KeyError("instruction"), "PandaLM rows with an instruction")
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
    data = _json_list(path, "ShareGPT file")
    rows, dropped = [], 0
    for index, obj in enumerate(data):
        try:
            msgs = [{"role": _SHAREGPT_ROLES.get(m["from"], m["from"]), "content": m["value"]}
                    for m in obj["conversations"]]
            c, r = obj["chosen"]["value"], obj["rejected"]["value"]
        except (KeyError, TypeError) as err:
            raise _malformed(path, f"row {index}", err, "conversations [{from, value}], chosen.value, "
                                                         "rejected.value") from None
        if not c.strip() or not r.strip() or c.strip() == r.strip():
            dropped += 1
            continue
        rows.append({"prompt": msgs, "chosen": [{"role": "assistant", "content": c}],
                     "rejected": [{"role": "assistant", "content": r}]})
    return rows, dropped


IMPORTERS = {"hh-rlhf": hh_rlhf_rows, "pandalm": pandalm_rows, "sharegpt": sharegpt_rows}


def detect_format(path: Path) -> str:
    """'hh-rlhf', 'pandalm', 'sharegpt' or 'rows' (our own JSONL/JSON rows)."""
    head = read_head(path).lstrip()
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

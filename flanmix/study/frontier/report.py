"""The results of a frontier study: `results.csv` (one row per evaluated checkpoint), `results.jsonl` (one record
per run), `results.md` (final points, win rates, and whether each method's knob orders its runs as expected),
`frontier.png` (reward vs KL, one colour per method, as the DPO paper's Figure 2) and `winrate.png` (win rate
against the SFT model vs sampling temperature). Nothing here depends on timing, so two runs of a seeded spec
write identical files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from flanmix.core.atomic import atomic_open, write_text
from flanmix.study.frontier.spec import KNOB_DIRECTION, FrontierSpec

POINT_COLUMNS = ["run", "method", "knob", "value", "step", "reward", "reward_se", "kl", "kl_se", "length"]
METHOD_ORDER = ("sft", "ppo", "dpo", "ipo", "rrhf")


def collect(spec: FrontierSpec, out: Path) -> list[dict]:
    """The SFT point and every complete run of the spec, in spec order (results without timings)."""
    ids = ["sft"] + [f"{sw.method}-{sw.knob}-{v:g}" for sw in spec.runs for v in sw.values]
    rows = []
    for run_id in ids:
        path = out / "runs" / run_id / "result.json"
        if path.is_file():
            rows.append({k: v for k, v in json.loads(path.read_text()).items() if k not in ("seconds", "hash")})
    return rows


def write_reports(spec: FrontierSpec, out: str | Path, *, plots: bool = True) -> list[dict]:
    """Write results.csv / .jsonl / .md (and the plots) from the complete runs; returns the run records."""
    out = Path(out)
    rows = collect(spec, out)
    temps = [f"{t:g}" for t in spec.eval.temperatures]
    columns = POINT_COLUMNS + [f"win_rate_t{t}" for t in temps]
    with atomic_open(out / "results.csv", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            for i, p in enumerate(r["points"]):
                last = i == len(r["points"]) - 1
                wins = {f"win_rate_t{t}": r["win_rates"].get(t) for t in temps} if last else {}
                w.writerow({**{k: r[k] for k in ("run", "method", "knob", "value")}, **_rounded(p), **wins})
    write_text(out / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    write_text(out / "results.md", markdown(spec, rows))
    if plots and rows:
        plot_frontier(spec, rows, out / "frontier.png")
        plot_win_rates(spec, rows, out / "winrate.png")
    return rows


def _rounded(point: dict) -> dict:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in point.items()}


def ordering(spec: FrontierSpec, rows: Sequence[dict]) -> list[dict]:
    """Per method: its runs from least to most KL budget (by the knob's direction), and whether the final KL and
    the final reward rise along that order."""
    out = []
    for sweep in spec.runs:
        mine = [r for r in rows if r["method"] == sweep.method and r["knob"] == sweep.knob]
        if len(mine) < 2:
            continue
        direction = KNOB_DIRECTION.get(sweep.knob, 1)
        mine.sort(key=lambda r: direction * r["value"])
        kls = [r["points"][-1]["kl"] for r in mine]
        rewards = [r["points"][-1]["reward"] for r in mine]
        out.append({"method": sweep.method, "knob": sweep.knob, "values": [r["value"] for r in mine],
                    "kl": kls, "reward": rewards,
                    "kl_rises": all(a <= b for a, b in zip(kls, kls[1:])),
                    "reward_rises": all(a <= b for a, b in zip(rewards, rewards[1:]))})
    return out


def markdown(spec: FrontierSpec, rows: Sequence[dict]) -> str:
    """results.md: the final point and win rates of every run, and the per-method ordering check."""
    temps = [f"{t:g}" for t in spec.eval.temperatures]
    lines = [f"# {spec.name}: reward vs KL to the SFT model", "",
             f"True reward and sequence KL (nats, Monte-Carlo over {spec.eval.samples} temperature-1 samples per "
             f"held-out prompt, {spec.task.eval_prompts} prompts) at the last checkpoint; win rate against the SFT "
             "model's sample for the same prompt at each temperature (ties count half).", "",
             "| run | method | knob | value | steps | reward | KL | " + " | ".join(f"win T={t}" for t in temps) + " |",
             "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(temps)]
    for r in rows:
        p = r["points"][-1]
        wins = " | ".join(f"{r['win_rates'].get(t, float('nan')):.2f}" for t in temps)
        value = "" if r["value"] is None else f"{r['value']:g}"
        lines.append(f"| {r['run']} | {r['method']} | {r['knob'] or ''} | {value} | {p['step']} | "
                     f"{p['reward']:.3f} ± {p['reward_se']:.3f} | {p['kl']:.2f} ± {p['kl_se']:.2f} | {wins} |")
    checks = ordering(spec, rows)
    if checks:
        lines += ["", "More KL budget → more reward? (runs ordered from least to most budget by the knob)", "",
                  "| method | knob | values | final KL | final reward | KL rises | reward rises |",
                  "|---|---|---|---|---|---|---|"]
        for c in checks:
            lines.append(f"| {c['method']} | {c['knob']} | {', '.join(f'{v:g}' for v in c['values'])} | "
                         f"{', '.join(f'{v:.2f}' for v in c['kl'])} | {', '.join(f'{v:.3f}' for v in c['reward'])} "
                         f"| {'yes' if c['kl_rises'] else 'no'} | {'yes' if c['reward_rises'] else 'no'} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ plots

def _colors() -> dict[str, str]:
    palette = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {"sft": "black", **{m: palette[i] for i, m in enumerate(METHOD_ORDER[1:])}}


def plot_frontier(spec: FrontierSpec, rows: Sequence[dict], path: Path) -> None:
    """Reward vs KL, one colour per method: every checkpoint (small, faint), each run's last checkpoint (large,
    labelled with the knob value), a line through a method's last checkpoints in KL order, the SFT model as a
    star."""
    colors = _colors()
    fig = Figure(figsize=(6.4, 4.4))  # a bare Figure (no pyplot): nothing process-wide changes
    ax = fig.subplots()
    finals: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        m, pts = r["method"], r["points"]
        if m == "sft":
            ax.scatter([p["kl"] for p in pts], [p["reward"] for p in pts], marker="*", s=160, color=colors[m],
                       zorder=3, label="SFT")
            continue
        ax.scatter([p["kl"] for p in pts[:-1]], [p["reward"] for p in pts[:-1]], color=colors[m], s=12, alpha=0.4)
        last = pts[-1]
        ax.scatter([last["kl"]], [last["reward"]], color=colors[m], s=40, zorder=2,
                   label=m.upper() if m not in finals else None)
        ax.annotate(f"{r['value']:g}", (last["kl"], last["reward"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points", color=colors[m])
        finals.setdefault(m, []).append((last["kl"], last["reward"]))
    for m, pts in finals.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[m], alpha=0.6, linewidth=1)
    ax.set_xlabel("KL(π ‖ π_SFT), nats per sequence")
    ax.set_ylabel("true reward (held-out prompts)")
    ax.set_title(f"{spec.name}: reward vs KL (large: final checkpoint, label: knob value)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_win_rates(spec: FrontierSpec, rows: Sequence[dict], path: Path) -> None:
    """Win rate against the SFT model vs sampling temperature, one line per run (colour: method)."""
    colors = _colors()
    temps = list(spec.eval.temperatures)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    styles = ("-", "--", ":", "-.")
    seen: dict[str, int] = {}
    for r in rows:
        if r["method"] == "sft":
            continue
        i = seen[r["method"]] = seen.get(r["method"], -1) + 1
        ys = [r["win_rates"].get(f"{t:g}") for t in temps]
        ax.plot(temps, ys, marker="o", color=colors[r["method"]], linestyle=styles[i % len(styles)],
                label=f"{r['method'].upper()} {r['knob']}={r['value']:g}")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("sampling temperature")
    ax.set_ylabel("win rate vs SFT (true reward)")
    ax.set_title(f"{spec.name}: win rate against the SFT model", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)

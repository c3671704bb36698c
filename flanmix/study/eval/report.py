"""Reading a results dict: the plain-text table `flanmix eval` prints."""

from __future__ import annotations


def format_table(report: dict) -> str:
    """A plain-text table: one row per task, then clusters and the overall scores."""
    names = ["exact_match", "exact_match_strict", "rank_classification", "rank_classification_norm", "acc_norm",
             "cot_exact_match", "contains"]
    present = [m for m in names if any(m in t["metrics"] for t in report["tasks"].values())]
    short = {"exact_match": "EM", "exact_match_strict": "EM-strict", "rank_classification": "RC",
             "rank_classification_norm": "RC-norm", "acc_norm": "acc-norm", "cot_exact_match": "CoT-EM",
             "contains": "contains"}
    header = ["task", "cluster", "n", *[short[m] for m in present], "score"]
    rows = [header]

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    for name, t in report["tasks"].items():
        rows.append([name, t["cluster"], str(t["n"]), *[fmt(t["metrics"].get(m)) for m in present], fmt(t["score"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for cname, c in report["clusters"].items():
        lines.append(f"cluster {cname:<20} {fmt(c['score'])}  (macro over {c['n_tasks']} tasks)")
    o = report["overall"]
    lines.append(f"overall {'(task macro)':<20} {fmt(o['score'])}  ({o['n_tasks']} tasks, {o['n_items']} items)")
    lines.append(f"overall {'(cluster macro)':<20} {fmt(o['cluster_macro'])}  ({o['n_clusters']} clusters)")
    return "\n".join(lines)

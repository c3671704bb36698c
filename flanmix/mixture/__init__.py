"""Mixtures: which tasks, at what rates, in which template types — and building them into shards.

    spec      the mixture file (`MixtureSpec`: components, weights, rate rules, size, seed, filters)
    resolve   components → leaves (task, share of the mixture, inherited settings), through nested mixtures
    plan      every row decided from the seed (task, example, template type and index, cot), before rendering
    render    plan chunks → shard files, in forked workers when asked (same bytes for any --num-proc)
    build     resolve, plan, render, dedup across shards, manifest; atomically into the output folder
    manifest  what a build read and wrote, target vs realized proportions
    merge     the parts of a `--num-shards K` build → one folder equal to a single build
"""

from flanmix.mixture.build import DEFAULT_ROWS_PER_SHARD, PILOT_ROWS, build
from flanmix.mixture.manifest import Manifest, summarize
from flanmix.mixture.merge import merge
from flanmix.mixture.plan import Plan, epoch_size, largest_remainder, make_plan
from flanmix.mixture.resolve import (
                                     DEFAULT_SETTINGS,
                                     Leaf,
                                     Resolved,
                                     Settings,
                                     effective_template_types,
                                     resolve,
                                     task_rule_rate,
)
from flanmix.mixture.spec import (
                                     Component,
                                     DecontamSpec,
                                     MixtureBody,
                                     MixtureSpec,
                                     RateSpec,
                                     SizeSpec,
                                     as_spec,
                                     find_mixture,
                                     load_spec,
                                     mixture_names,
)

__all__ = [
    "DEFAULT_ROWS_PER_SHARD", "DEFAULT_SETTINGS", "PILOT_ROWS", "Component", "DecontamSpec", "Leaf", "Manifest",
    "MixtureBody", "MixtureSpec", "Plan", "RateSpec", "Resolved", "Settings", "SizeSpec", "as_spec", "build",
    "effective_template_types", "epoch_size", "find_mixture", "largest_remainder", "load_spec", "make_plan", "merge",
    "mixture_names", "resolve", "summarize", "task_rule_rate",
]

"""Template-type splits as planned and as realized.

- `largest_remainder` against a brute-force Hamilton apportionment in exact fractions; ties between template
  types drawn per leaf, so that over many tiny leaves no type gets the extra rows (a chi-square test that the
  position tie-break fails).
- FLAN few-shot rows left without exemplars are replaced by a row of the same task and template type from another
  example, so the realized split equals the plan; each replaced row is checked against a render of its own
  (example, template) re-derived here, and the shards are the same bytes across processes, shard sizes, machine
  parts (merge) and the Ray engine.
"""

from __future__ import annotations

import dataclasses
import json
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from flanmix.cli import main
from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.fewshot import FewShotDropped
from flanmix.mixture import build, largest_remainder, make_plan, merge, resolve
from flanmix.mixture.spec import MixtureSpec
from flanmix.registry import Registry
from helpers import write_fruit_task

# Ten x_shot patterns, as FLAN has: Binomial(25, 1/10) exemplars, none with probability 0.9^25 (7.2%).
PATTERNS = [{"input": f"({k}) {{{{ word }}}}\n{{{{ options_ }}}}", "target": "{{ answer }}",
             "inputs_prefix": "Q: ", "targets_prefix": "A: ", "x_y_delimiter": "\n", "example_separator": "\n\n"}
            for k in range(10)]
TEMPLATES = {"options_style": "flan",
             "zero_shot": [{"input": "Is {{ word }} a fruit?\n{{ options_ }}", "target": "{{ answer }}"}],
             "zero_shot_no_options": [{"input": "Fruit or not: {{ word }}", "target": "{{ answer }}"}],
             "few_shot_patterns": PATTERNS}
CHI2_DF3_P001 = 16.27  # the chi-square distribution's 0.999 quantile with 3 degrees of freedom


def write_task(root: Path, name: str, rows: int, extra: str = "") -> None:
    """A file-sourced task with yes/no options and FLAN few-shot patterns in registry folder `root`."""
    write_fruit_task(root, TEMPLATES, name=name, rows=rows, extra=extra)


@pytest.fixture(scope="module")
def reg_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("splits")
    write_task(root, "fruit", 60)
    write_task(root, "pair", 2)  # two rows: fewer other examples than replacement attempts
    write_task(root, "tight", 30, "few_shot_max_chars: 5\n")  # no exemplar ever fits: every few-shot row drops
    return root


@pytest.fixture(scope="module")
def registry(reg_dir) -> Registry:
    return Registry.discover([reg_dir], bundled=False, env=False, python=False)


SPEC = {"seed": 7, "size": {"examples": 1200}, "dedup": False, "randomize_options": True,
        "components": [{"task": "fruit", "weight": 0.8}, {"task": "pair", "weight": 0.2}]}


# ---------------------------------------------------------------------------------------------- apportionment

def hamilton_ok(total: int, weights: list[int], counts: np.ndarray) -> bool:
    """Brute force in exact fractions: counts sum to `total`, each is its quota's floor or floor + 1, and every
    entry that got the extra row has a remainder at least as large as every entry that did not."""
    quotas = [Fraction(total * w, sum(weights)) for w in weights]
    floors = [q.numerator // q.denominator for q in quotas]
    extra = [int(c) - f for c, f in zip(counts, floors)]
    if int(counts.sum()) != total or any(e not in (0, 1) for e in extra):
        return False
    got = [q - f for q, f, e in zip(quotas, floors, extra) if e]
    not_got = [q - f for q, f, e in zip(quotas, floors, extra) if not e]
    return not got or not not_got or min(got) >= max(not_got)


def test_largest_remainder_matches_a_brute_force_apportionment():
    draws = random.Random(0)
    for case in range(3000):
        weights = [draws.choice([0, 1, 1, 2, 3, 5]) for _ in range(draws.randint(1, 7))]
        if not any(weights):
            continue
        total = draws.randint(0, 40)
        rng = np.random.default_rng(case)
        for counts in (largest_remainder(total, np.array(weights)), largest_remainder(total, np.array(weights), rng)):
            assert hamilton_ok(total, weights, counts), (total, weights, counts)
            assert all(c == 0 for c, w in zip(counts, weights) if w == 0)
    # Weights equal in exact arithmetic but not as floats (0.1 + 0.2 > 0.3) still tie.
    ties = {tuple(largest_remainder(1, np.array([0.1 + 0.2, 0.3]), np.random.default_rng(s)).tolist())
            for s in range(40)}
    assert ties == {(1, 0), (0, 1)}


def test_largest_remainder_draws_only_for_a_tie_at_the_cut():
    assert largest_remainder(10, np.array([1, 1, 1])).tolist() == [4, 3, 3]  # without rng: by position
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    assert largest_remainder(7, np.array([4, 2, 1]), rng).tolist() == [4, 2, 1]  # exact: no draw
    assert largest_remainder(6, np.array([3, 3, 1, 1]), rng).tolist() == [2, 2, 1, 1]  # the tie is inside the cut
    assert rng.bit_generator.state == state
    wins = np.zeros(3, dtype=int)
    for _ in range(3000):
        wins += largest_remainder(10, np.array([1, 1, 1]), rng) - 3
    assert wins.sum() == 3000 and np.abs(wins - 1000).max() < 120  # sd of each count is ~26


def test_template_type_ties_do_not_favour_a_type_over_many_tiny_leaves(registry):
    """Four equal template types, five rows per leaf: one type gets a second row. By position that was always
    zs_opt (a 40% share instead of 25% over the whole mixture); drawn per leaf it is spread uniformly."""
    spec = MixtureSpec.model_validate({"size": 10, "components": [{"task": "fruit"}],
                                       "template_types": dict.fromkeys(TEMPLATE_TYPES, 1)})
    leaf = resolve(spec, registry).leaves[0]
    leaves = [dataclasses.replace(leaf, component=f"c{i}", rate=1.0) for i in range(400)]
    plan = make_plan(leaves, 5 * len(leaves), seed=3, replacement=True)
    per_leaf = np.zeros((len(leaves), 4), dtype=int)
    np.add.at(per_leaf, (plan.leaf, plan.ttype), 1)
    assert (per_leaf.sum(axis=1) == 5).all() and per_leaf.min() == 1 and per_leaf.max() == 2  # exact counts
    extra = (per_leaf == 2).sum(axis=0)
    assert extra.sum() == len(leaves)
    expected = len(leaves) / 4
    chi2 = float(((extra - expected) ** 2 / expected).sum())
    assert chi2 < CHI2_DF3_P001, extra.tolist()


# ---------------------------------------------------------------------------------------------- replacement

def plan_of(registry: Registry, spec: dict):
    resolved = resolve(MixtureSpec.model_validate(spec), registry)
    return resolved.leaves, make_plan(resolved.leaves, spec["size"]["examples"], spec["seed"], False)


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_dropped_fewshot_rows_are_replaced_and_the_split_is_the_plan(registry, tmp_path, capsys):
    manifest = build(SPEC, tmp_path / "out", registry=registry, fmt="jsonl", progress=False, rows_per_shard=400)
    size = manifest["size"]
    assert size["fewshot_replaced"] > 20 and "fewshot_dropped" not in size and size["rows"] == 1200
    for target in manifest["targets"]:
        assert target["realized"] == target["planned"], target
    # Row i of the output is plan row i: re-derive each row from the task, independently of the renderer.
    leaves, plan = plan_of(registry, SPEC)
    rows = read_rows(tmp_path / "out")
    replaced = other_template = 0
    for i, row in enumerate(rows):
        task = leaves[plan.leaf[i]].task
        ttype, tidx, cot = TEMPLATE_TYPES[plan.ttype[i]], int(plan.tidx[i]), bool(plan.cot[i])
        planned = task.examples("train")[plan.example[i]]
        assert (row["task_name"], row["template_type"], row["cot"]) == (task.name, ttype, cot)
        try:
            task.render_full(planned, template_type=ttype, template_idx=tidx, cot=cot, seed=SPEC["seed"],
                             randomize_options=True)
            assert (row["example_id"], row["template_idx"]) == (planned.example_id, tidx)
        except FewShotDropped:
            replaced += 1
            assert (row["example_id"], row["template_idx"]) != (planned.example_id, tidx)
            other_template += row["template_idx"] != tidx
            example = next(e for e in task.examples("train") if e.example_id == row["example_id"])
            out = task.render_full(example, template_type=ttype, template_idx=row["template_idx"], cot=cot,
                                   seed=SPEC["seed"], randomize_options=True)
            assert (row["inputs"], row["targets"]) == (out.inputs, out.targets)
    assert replaced == size["fewshot_replaced"]
    assert 0 < other_template < replaced  # only the two-row task runs out of other examples
    # `flanmix stats --json`: each top-level component's realized template-type split is its planned one.
    assert main(["stats", str(tmp_path / "out"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["rows"]["fewshot_replaced"] == replaced
    for component in stats["components"]:
        for split in component["template_types"].values():
            assert split["realized"] == pytest.approx(split["planned"], abs=1e-12)


def test_replacement_attempts_are_bounded_and_what_is_left_is_counted(registry, tmp_path):
    spec = {**SPEC, "components": [{"task": "tight"}]}
    manifest = build(spec, tmp_path / "out", registry=registry, fmt="jsonl", progress=False)
    _, plan = plan_of(registry, spec)
    few_shot = int((plan.ttype >= 2).sum())
    assert few_shot > 500 and manifest["size"]["fewshot_dropped"] == few_shot
    assert "fewshot_replaced" not in manifest["size"] and manifest["size"]["rows"] == 1200 - few_shot


def test_replaced_rows_are_the_same_bytes_however_the_build_is_split(registry, reg_dir, tmp_path):
    one = build(SPEC, tmp_path / "one", registry=registry, fmt="jsonl", progress=False, rows_per_shard=1200)
    many = build(SPEC, tmp_path / "many", registry=registry, fmt="jsonl", progress=False, num_proc=2,
                 rows_per_shard=150)
    assert read_rows(tmp_path / "one") == read_rows(tmp_path / "many")
    assert one["size"] == many["size"] and one["size"]["fewshot_replaced"] > 0
    parts = [tmp_path / f"part{i}" for i in range(3)]
    for i, part in enumerate(parts):
        build(SPEC, part, registry=registry, fmt="jsonl", progress=False, rows_per_shard=150, num_shards=3,
              shard_index=i)
    merged = merge(parts, tmp_path / "merged", progress=False)
    assert [s["sha256"] for s in merged["shards"]] == [s["sha256"] for s in many["shards"]]
    assert merged["size"] == many["size"]


def test_replaced_rows_are_the_same_bytes_on_the_ray_engine(ray_cluster, reg_dir, tmp_path):
    local = build(SPEC, tmp_path / "local", registry_dirs=[reg_dir], fmt="jsonl", progress=False,
                  rows_per_shard=300)
    ray = build(SPEC, tmp_path / "ray", registry_dirs=[reg_dir], fmt="jsonl", progress=False, rows_per_shard=300,
                engine="ray")
    assert [s["sha256"] for s in ray["shards"]] == [s["sha256"] for s in local["shards"]]
    assert ray["size"] == local["size"] and local["size"]["fewshot_replaced"] > 0

"""Scaling ablations: nested subsets, guards, resume, result files — grid mechanics with a fake cell runner, and
one small real grid (mixture build + SFT + DPO + eval, two worker processes, then a resume) on the session's nano
model."""

from __future__ import annotations

import csv
import json
import random

import pytest

from flanmix.core.errors import FlanmixError
from flanmix.study import ablation
from helpers import write_ablation_spec as write_spec

POOL = {f"t{i:02d}": f"c{i % 5}" for i in range(20)}


# ------------------------------------------------------------------------------------------------- subsets

def test_subsets_are_nested_and_seeded():
    a = ablation.nested_subsets(POOL, [1, 2, 4, 8, 16], seed=0)
    for small, big in zip([1, 2, 4, 8], [2, 4, 8, 16]):
        assert len(a[small]) == small and set(a[small]) < set(a[big])
    assert a == ablation.nested_subsets(POOL, [16, 8, 4, 2, 1], seed=0)
    shuffled = dict(random.Random(3).sample(sorted(POOL.items()), len(POOL)))
    assert a == ablation.nested_subsets(shuffled, [1, 2, 4, 8, 16], seed=0), "order must not depend on input order"
    b = ablation.nested_subsets(POOL, [1, 2, 4, 8, 16], seed=1)
    assert a != b and a[4] != b[4]


def test_cluster_subsets_and_round_robin():
    c = ablation.nested_subsets(POOL, [1, 2, 3], seed=0, axis="clusters")
    assert len({POOL[t] for t in c[1]}) == 1 and len({POOL[t] for t in c[3]}) == 3
    assert set(c[1]) < set(c[2]) < set(c[3])
    assert all(sum(POOL[x] == POOL[t] for x in POOL) == sum(POOL[x] == POOL[t] for x in c[3]) for t in c[3])
    rr = ablation.nested_subsets(POOL, [5], seed=0, how="round_robin")
    assert len({POOL[t] for t in rr[5]}) == 5, "round robin spans every cluster first"
    with pytest.raises(FlanmixError, match="exceeds the training pool"):
        ablation.nested_subsets(POOL, [1, 21], seed=0)


# ------------------------------------------------------------------------------------------------- guards

def test_overlap_guard(tmp_path):
    spec = write_spec(tmp_path / "a.yaml", pool=["cluster:arithmetic", "logic_order"])
    with pytest.raises(FlanmixError, match="overlaps the held-out set: logic_order"):
        ablation.run(spec, tmp_path / "out", runner=lambda c, x: {}, prepare=False)
    spec = write_spec(tmp_path / "b.yaml", held_out={"clusters": ["logicc"]})
    with pytest.raises(FlanmixError, match="did you mean logic"):
        ablation.run(spec, tmp_path / "out", runner=lambda c, x: {}, prepare=False)


def test_default_pool_excludes_held_out(tmp_path):
    plan = ablation.make_plan(ablation.load_spec(write_spec(tmp_path / "a.yaml"))[0], tmp_path / "out")
    assert plan.pool and not set(plan.pool) & set(plan.held_out)
    assert set(plan.held_out.values()) == {"logic"} and "logic" not in plan.pool.values()


def test_count_guard(tmp_path):
    spec = write_spec(tmp_path / "a.yaml", pool=["cluster:arithmetic"], task_counts=[1, 6])
    with pytest.raises(FlanmixError, match=r"tasks count 6 exceeds the training pool \(5 tasks\)"):
        ablation.run(spec, tmp_path / "out", runner=lambda c, x: {}, prepare=False)


def test_budget_guard(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    spec, _ = ablation.load_spec(write_spec(tmp_path / "a.yaml", pool=["cluster:arithmetic"], task_counts=[1, 4],
                                            budget={"steps": 5000, "batch_size": 32, "packing": False}))
    plan = ablation.make_plan(spec, tmp_path / "out")
    with pytest.raises(FlanmixError, match=r"2 cell\(s\) cannot fit the budget: e.g. n001-nano-s0") as err:
        ablation.check_budget(plan, tok)
    assert "budget.repeat" in str(err.value)
    spec, _ = ablation.load_spec(write_spec(tmp_path / "b.yaml", pool=["cluster:arithmetic"], task_counts=[1, 4],
                                            budget={"tokens": 10_000_000}))
    with pytest.raises(FlanmixError, match="tokens budget"):
        ablation.check_budget(ablation.make_plan(spec, tmp_path / "out"), tok)
    spec, _ = ablation.load_spec(write_spec(tmp_path / "c.yaml", pool=["cluster:arithmetic"], task_counts=[1, 4],
                                            budget={"tokens": 20_000}))
    needs = ablation.check_budget(ablation.make_plan(spec, tmp_path / "out"), tok)
    assert needs["n004-nano-s0"]["rows"] < needs["n004-nano-s0"]["supply_rows"]


@pytest.mark.parametrize("text, match", [
    ("held_out: {clusters: [logic]}\ntask_counts: [1]\nmodels: [nano]\nbudget: {steps: 2}\nbogus: 1\n",
     r"a.yaml:5: bogus: unknown key"),
    ("held_out: {clusters: [logic]}\ntask_counts: [1]\nmodels: [nano]\nbudget: {steps: 2, tokens: 5}\n",
     r"a.yaml:4: budget: .*exactly one of steps or tokens"),
    ("held_out: {clusters: [logic]}\ntask_counts: [1]\nmodels: [huge]\nbudget: {steps: 2}\n",
     r"a.yaml:3: models\[0\]: .*unknown model size 'huge'"),
    ("held_out: {clusters: [logic]}\ntask_counts: [1]\nmodels: [nano]\nbudget: {steps: 2}\n"
     "mixture:\n  template_typez: {zs_opt: 1}\n", r"a.yaml:6: mixture.template_typez: unknown key"),
    ("held_out: {clusters: [logic]}\ntask_counts: [1]\nmodels: [nano]\nbudget: {steps: 2}\n"
     "train:\n  max_steps: 9\n", r"a.yaml:6: train.max_steps: set by the ablation"),
    ("held_out: {clusters: [logic]}\ntask_counts: [1]\nmodels: [nano]\nbudget: {steps: 2}\n"
     "train:\n  lr: -1\n", r"a.yaml:6: train.lr: "),
    ("held_out: {clusters: [logic]}\ntask_counts: [1]\nmodels: [nano]\nbudget: {steps: 2}\n"
     "preference:\n  config:\n    betta: 0.1\n", r"a.yaml:7: preference.config.betta: unknown key"),
    ("held_out: {clusters: [logic]}\ntask_counts: [1]\nmodels: [nano]\nbudget: {steps: 2}\n"
     "eval:\n  threads: 2\n", r"a.yaml:6: eval: .*threads is set by the ablation"),
    ("held_out: {clusters: [logic]}\ntask_counts: [1]\nmodels: [nano]\nbudget: {steps: 2}\n"
     "eval:\n  seen_metrics: [bleu]\n", r"a.yaml:6: eval.seen_metrics: .*unknown metric 'bleu'"),
    ("held_out: {clusters: [logic]}\ntask_counts: [1\n", r"a.yaml:\d+: malformed YAML"),
])
def test_bad_yaml_one_line_exit_2(tmp_path, capsys, text, match):
    from flanmix.cli import main

    spec = tmp_path / "a.yaml"
    spec.write_text(text, encoding="utf-8")
    with pytest.raises(FlanmixError, match=match):
        ablation.load_spec(spec)
    assert main(["ablate", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flanmix: error:") and "\n" not in err


def test_eval_settings_are_eval_options_with_seen_overrides(tmp_path):
    from flanmix.study.eval import EvalOptions

    spec, _ = ablation.load_spec(write_spec(tmp_path / "a.yaml", eval={
        "limit": 7, "metrics": ["rank_classification"], "seen_limit": 3, "seen_metrics": ["exact_match"],
        "variant": "fs_opt"}))
    held = spec.eval.options(seen=False, registry_dirs=["r"], threads=2)
    seen = spec.eval.options(seen=True, registry_dirs=["r"], threads=2)
    assert type(held) is EvalOptions and held.samples == 2
    assert (held.limit, held.metrics, held.variant, held.registry_dirs, held.threads) == \
        (7, ["rank_classification"], "fs_opt", ["r"], 2)
    assert (seen.limit, seen.metrics, seen.variant) == (3, ["exact_match"], "fs_opt")
    default, _ = ablation.load_spec(write_spec(tmp_path / "b.yaml"))
    assert default.eval.options(seen=True, registry_dirs=[], threads=None).limit == 50


# ------------------------------------------------------------------------------------------------- grid mechanics

def fake_runner(calls: list):
    def runner(cell, ctx):
        calls.append(cell.id)
        base = 0.2 + 0.1 * cell.count ** 0.5 + (0.05 if cell.model == "tiny" else 0) + 0.01 * cell.seed
        return {"heldout_score": base, "seen_score": base + 0.2, "heldout:logic": base, "steps": 2,
                "train_tokens": 100 * cell.count, "model_params": 1000 if cell.model == "nano" else 4000}
    return runner


def test_results_resume_and_skip(tmp_path):
    spec = write_spec(tmp_path / "a.yaml", models=["nano", "tiny"], seeds=[0, 1], baseline=True)
    out = tmp_path / "out"
    calls: list = []
    res = ablation.run(spec, out, runner=fake_runner(calls))
    assert len(calls) == 2 * (3 + 1) * 2 and not res["skipped"]
    for name in ("results.csv", "results.jsonl", "results.md", "plot_tasks.png", "plot_size.png", "plan.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16
    assert set(ablation.BASE_COLUMNS) <= set(rows[0]) and "heldout:logic" in rows[0]
    assert {r["count"] for r in rows} == {"0", "1", "2", "4"}
    md = (out / "results.md").read_text()
    assert "| tasks | model | params | held-out | seen |" in md and "±" in md and "0 (untrained)" in md
    assert len((out / "results.jsonl").read_text().splitlines()) == 16

    # rerun: everything complete -> nothing runs
    calls.clear()
    res = ablation.run(spec, out, runner=fake_runner(calls))
    assert calls == [] and len(res["skipped"]) == 16
    # a lost / half-written cell reruns alone
    (out / "cells" / "n002-tiny-s1" / "result.json").unlink()
    (out / "cells" / "n004-nano-s0" / "result.json").write_text("{trunc")
    res = ablation.run(spec, out, runner=fake_runner(calls))
    assert sorted(calls) == ["n002-tiny-s1", "n004-nano-s0"] and len(res["rows"]) == 16
    # a changed budget changes every trained cell's hash: those rerun (in a clean folder), the baselines do not
    calls.clear()
    (out / "cells" / "n001-nano-s0" / "leftover-checkpoint").mkdir()
    spec = write_spec(tmp_path / "a.yaml", models=["nano", "tiny"], seeds=[0, 1], baseline=True,
                      budget={"steps": 3, "batch_size": 2, "max_length": 128})
    ablation.run(spec, out, runner=fake_runner(calls))
    assert len(calls) == 16
    assert not (out / "cells" / "n001-nano-s0" / "leftover-checkpoint").exists()
    assert json.loads((out / "cells" / "n001-nano-s0" / "cell.json").read_text())["budget"]["steps"] == 3


def test_interrupted_run_resumes(tmp_path):
    spec = write_spec(tmp_path / "a.yaml")
    out = tmp_path / "out"
    calls: list = []

    def dies_on_third(cell, ctx):
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fake_runner(calls)(cell, ctx)

    with pytest.raises(KeyboardInterrupt):
        ablation.run(spec, out, runner=dies_on_third)
    assert calls == ["n001-nano-s0", "n002-nano-s0"]
    assert not (out / "cells" / "n004-nano-s0" / "result.json").exists()
    calls.clear()
    res = ablation.run(spec, out, runner=fake_runner(calls))
    assert calls == ["n004-nano-s0"] and len(res["skipped"]) == 2


def test_run_sets_torch_threads_and_restores_them(tmp_path):
    import torch

    before = torch.get_num_threads()
    during: list = []
    ablation.run(write_spec(tmp_path / "a.yaml"), tmp_path / "out", dry_run=True, prepare=False, threads=before + 1,
                 log=lambda msg: during.append(torch.get_num_threads()))
    assert during[-1] == before + 1 and torch.get_num_threads() == before


# ------------------------------------------------------------------------------------------------- real cells

def test_real_grid_end_to_end_and_resume(tmp_path, tiny_model_dir):
    """Two real cells (1 and 2 tasks) on the nano model: mixture build, 3 SFT steps, held-out + seen eval."""
    spec = write_spec(
        tmp_path / "a.yaml", pool=["cluster:arithmetic"], task_counts=[1, 2], baseline=True,
        models=[{"name": "nano", "path": str(tiny_model_dir)}],
        budget={"steps": 3, "batch_size": 4, "max_length": 128},
        held_out={"tasks": ["logic_order", "cls_parity"]},
        mixture={"template_types": {"zs_opt": 1, "zs_noopt": 1}},
        train={"lr": 3e-3},
        preference={"stage": "dpo", "examples": 8, "config": {"max_steps": 2, "batch_size": 4}},
        eval={"limit": 4, "metrics": ["rank_classification"], "seen_limit": 2, "seen_metrics": ["exact_match"],
              "batch_size": 8})
    out = tmp_path / "out"
    res = ablation.run(spec, out, jobs=2, threads=1)
    assert sorted(res["ran"]) == ["base-nano-s0", "n001-nano-s0", "n002-nano-s0"]
    rows = {r["cell"]: r for r in res["rows"]}
    for cid in ("n001-nano-s0", "n002-nano-s0"):
        r, cdir = rows[cid], out / "cells" / cid
        assert r["steps"] == 3 and r["train_tokens"] > 0 and 0 <= r["heldout_score"] <= 1
        assert r["seen_score"] is not None and set(r["heldout_task_scores"]) == {"logic_order", "cls_parity"}
        manifest = json.loads((cdir / "mixture" / "manifest.json").read_text())
        assert sorted({leaf["task"] for leaf in manifest["leaves"]}) == r["tasks"]
        cfg = json.loads((cdir / "train_config.json").read_text())
        assert cfg["max_steps"] == 3 and cfg["seed"] == 0 and cfg["lr"] == 3e-3
        assert (cdir / "sft" / "sft_config.json").is_file() and (cdir / "eval_heldout.json").is_file()
        assert json.loads((cdir / "dpo_config.json").read_text())["model"].endswith("sft/final")
        assert (cdir / "preferences.jsonl").read_text().count("\n") >= 4 and r["preference_seconds"] > 0
        assert not (cdir / "sft" / "final").exists() and not (cdir / "dpo" / "final").exists(), \
            "weights are dropped unless keep_models"
    assert set(rows["n001-nano-s0"]["tasks"]) < set(rows["n002-nano-s0"]["tasks"])
    assert rows["base-nano-s0"]["seen_score"] is None and rows["base-nano-s0"].get("steps") is None
    assert (out / "plot_tasks.png").stat().st_size > 0

    (out / "cells" / "n002-nano-s0" / "result.json").unlink()
    res = ablation.run(spec, out)
    assert res["ran"] == ["n002-nano-s0"] and len(res["skipped"]) == 2


def test_template_and_cot_axes(tmp_path):
    spec, _ = ablation.load_spec(write_spec(tmp_path / "a.yaml", pool=["cluster:arithmetic"], task_counts=[2],
                                            templates_per_task=[1, None], cot_share=[0.0, 0.5], seeds=[0, 1]))
    plan = ablation.make_plan(spec, tmp_path / "out")
    ids = [c.id for c in plan.cells]
    assert len(ids) == len(set(ids)) == 2 * 2 * 2
    assert "n002-nano-tpl1-cot0p5-s1" in ids and "n002-nano-cot0-s0" in ids
    cell = next(c for c in plan.cells if c.id == "n002-nano-tpl1-cot0p5-s1")
    mspec = ablation.mixture_spec(plan, cell, 100)
    assert mspec["cot"] == 0.5 and mspec["seed"] == 1 and mspec["components"] == [{"tasks": cell.tasks}]
    limited = ablation.limited_registry(plan.registry, cell.tasks, 1)
    for name in cell.tasks:
        task = limited.get(name)
        assert task.num_templates() == 1 and task.template_indices(inverted=True) == []
        assert task.num_templates(cot=True) <= 1
    hashes = {c.hash for c in plan.cells}
    assert len(hashes) == len(plan.cells)


def test_cell_hashes_of_the_demo_grid_match_the_first_release(repo_root, tmp_path):
    """A rerun must find cells finished by earlier versions: the hashes below were computed by flanmix 0.1.0
    (before eval settings became `EvalOptions`) for ablations/demo.yaml. A new option changes a cell's hash only
    when it is set away from its default."""
    spec_file = repo_root / "ablations" / "demo.yaml"
    spec, _ = ablation.load_spec(spec_file)
    plan = ablation.make_plan(spec, tmp_path / "run", spec_file=spec_file)
    hashes = {cell.id: cell.hash for cell in plan.cells}
    assert {k: hashes[k] for k in ("base-nano-s0", "base-tiny-s0", "n001-nano-s0", "n001-tiny-s0")} == {
        "base-nano-s0": "4603306faececd7f", "base-tiny-s0": "74085f01e58a54ae",
        "n001-nano-s0": "9f943698431c4116", "n001-tiny-s0": "70d66f4936b16be8"}
    changed = spec.model_copy(update={"eval": spec.eval.model_copy(update={"bbh_shots": 1})})
    rehashed = ablation.make_plan(changed, tmp_path / "run", spec_file=spec_file)
    assert all(a.hash != b.hash for a, b in zip(plan.cells, rehashed.cells))

"""Mixture specs, rates and planning; bad input gives one clear FlanmixError line (exit code 2)."""

from __future__ import annotations

import gc
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flanmix.core.errors import FlanmixError
from flanmix.mixture import (
    MixtureSpec,
    build,
    epoch_size,
    find_mixture,
    largest_remainder,
    load_spec,
    make_plan,
    resolve,
)
from helpers import make_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return make_registry(tmp_path_factory.mktemp("reg"))


def _spec(**kw) -> MixtureSpec:
    base = {"size": 1000, "components": [{"cluster": "alpha"}]}
    base.update(kw)
    return MixtureSpec.model_validate(base)


def _rates(resolved) -> dict[str, float]:
    out: dict[str, float] = {}
    for leaf in resolved.leaves:
        out[leaf.task.name] = out.get(leaf.task.name, 0.0) + leaf.rate
    return out


def _train(registry, name: str) -> int:
    return len(registry.get(name).examples("train"))


def test_examples_proportional_with_cap(registry):
    rates = _rates(resolve(_spec(rate={"by": "examples", "cap": 250},
                                 components=[{"tasks": ["t0", "t2", "t4"]}]), registry))
    sizes = {n: min(_train(registry, n), 250) for n in ("t0", "t2", "t4")}
    assert sizes["t4"] == 250 and sizes["t0"] < 250  # the cap binds on the big task only
    for name, size in sizes.items():
        assert rates[name] == pytest.approx(size / sum(sizes.values()))


def test_temperature_and_equal(registry):
    rates = _rates(resolve(_spec(rate={"by": "temperature", "temperature": 2.0},
                                 components=[{"tasks": "t[024]"}]), registry))
    raw = {n: math.sqrt(_train(registry, n)) for n in ("t0", "t2", "t4")}
    for name in raw:
        assert rates[name] == pytest.approx(raw[name] / sum(raw.values()))
    rates = _rates(resolve(_spec(components=[{"cluster": "beta"}]), registry))
    assert set(rates) == {"t1", "t3", "t5"} and all(r == pytest.approx(1 / 3) for r in rates.values())


def test_weights_and_nested_mixtures_multiply(registry):
    spec = _spec(components=[
        {"task": "t0", "weight": 3},
        {"mixture": {"components": [{"task": "t1", "weight": 1}, {"task": "t2", "weight": 3}]}, "weight": 1},
    ])
    rates = _rates(resolve(spec, registry))
    assert rates == pytest.approx({"t0": 0.75, "t1": 0.25 * 0.25, "t2": 0.25 * 0.75})


def test_nested_mixture_file_inherits_and_overrides(registry, tmp_path):
    (tmp_path / "sub.yaml").write_text("components: [{cluster: beta}]\ncot: 1.0\ntemplate_types: {zs_noopt: 1}\n")
    (tmp_path / "top.yaml").write_text("size: 100\ncot: 0.0\ncomponents:\n  - {mixture: sub.yaml, weight: 1}\n"
                                       "  - {task: t0}\n")
    spec, doc = load_spec(tmp_path / "top.yaml")
    resolved = resolve(spec, registry, doc=doc)
    by_task = {leaf.task.name: leaf for leaf in resolved.leaves}
    assert by_task["t3"].settings.cot == 1.0 and by_task["t3"].settings.template_types == (0, 1, 0, 0)
    assert by_task["t0"].settings.cot == 0.0 and len(resolved.spec_files) == 2


def test_plan_exact_ratios_and_fallbacks(registry):
    spec = _spec(template_types={"zs_opt": 1, "zs_noopt": 1, "fs_opt": 1, "fs_noopt": 1}, cot=0.5,
                 components=[{"task": "t0"}, {"task": "t1"}, {"task": "t3"}])
    resolved = resolve(spec, registry)
    plan = make_plan(resolved.leaves, 1200, seed=3, replacement=False)
    assert len(plan) == 1200
    names = np.array([leaf.task.name for leaf in resolved.leaves])[plan.leaf]
    t3 = names == "t3"
    assert t3.sum() == 400 and plan.cot[t3].sum() == 200  # cot share among tasks with CoT templates
    assert plan.cot[names == "t1"].sum() == 0  # t1 has no CoT templates
    assert np.bincount(plan.ttype[t3], minlength=4).tolist() == [100, 100, 100, 100]
    t0_types = np.bincount(plan.ttype[names == "t0"], minlength=4).tolist()
    assert t0_types[0] == 0 and t0_types[2] == 0  # no options: opt -> noopt, recorded
    assert any("no options" in k for notes in plan.fallbacks.values() for k in notes)
    again = make_plan(resolved.leaves, 1200, seed=3, replacement=False)
    assert all((getattr(plan, k) == getattr(again, k)).all() for k in ("leaf", "example", "ttype", "tidx", "cot"))


def test_inversion_ratio(registry):
    resolved = resolve(_spec(inversion=0.3, cot=0.0, components=[{"task": "t4"}]), registry)
    plan = make_plan(resolved.leaves, 13000, seed=0, replacement=True)
    inverted = (plan.tidx == 2).mean()
    assert inverted == pytest.approx(0.3 / 1.3, abs=0.02)


def test_without_replacement_uses_every_example_before_repeats(registry):
    resolved = resolve(_spec(components=[{"task": "t2"}]), registry)
    n = _train(registry, "t2")
    plan = make_plan(resolved.leaves, n, seed=1, replacement=False)
    assert sorted(plan.example.tolist()) == list(range(n))


def test_epoch_stops_at_first_exhausted(registry):
    resolved = resolve(_spec(components=[{"task": "t0"}, {"task": "t5"}]), registry)
    assert epoch_size(resolved.leaves) == 2 * _train(registry, "t0")


def test_largest_remainder():
    assert largest_remainder(10, np.array([1, 1, 1])).tolist() == [4, 3, 3]
    assert largest_remainder(7, np.array([0.5, 0.25, 0.25])).sum() == 7


# ---------------------------------------------------------------------------------------------- bad input

def _write(tmp_path: Path, text: str, name: str = "mix.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _build_error(registry, path: Path, tmp_path: Path) -> FlanmixError:
    with pytest.raises(FlanmixError) as info:
        build(path, tmp_path / "out", registry=registry, progress=False)
    assert not (tmp_path / "out").exists()
    return info.value


def test_negative_weight(registry, tmp_path):
    err = _build_error(registry, _write(tmp_path, "size: 10\ncomponents:\n  - {task: t0, weight: -1}\n"), tmp_path)
    assert "mix.yaml:3" in str(err) and "weight" in str(err)


def test_all_zero_weights(registry, tmp_path):
    err = _build_error(registry, _write(tmp_path, "size: 10\ncomponents:\n  - {task: t0, weight: 0}\n"
                                                  "  - {task: t1, weight: 0}\n"), tmp_path)
    assert "all component weights are zero" in str(err)


def test_unknown_task_suggests_closest(registry, tmp_path):
    err = _build_error(registry, _write(tmp_path, "size: 10\ncomponents:\n  - {task: t00}\n"), tmp_path)
    assert "unknown task 't00'" in str(err) and "did you mean" in str(err) and "mix.yaml:3" in str(err)


def test_unknown_mixture_suggests_closest(tmp_path):
    with pytest.raises(FlanmixError, match="did you mean demo"):
        find_mixture("dem")


def test_unknown_key_has_file_and_line(registry, tmp_path):
    err = _build_error(registry, _write(tmp_path, "size: 10\nratee: {by: examples}\ncomponents: [{task: t0}]\n"),
                       tmp_path)
    assert "mix.yaml:2" in str(err) and "unknown key" in str(err)


def test_cycle_in_nested_mixtures(registry, tmp_path):
    _write(tmp_path, "components: [{mixture: b.yaml}]\n", "a.yaml")
    _write(tmp_path, "components: [{mixture: a.yaml}, {task: t0}]\n", "b.yaml")
    top = _write(tmp_path, "size: 10\ncomponents: [{mixture: a.yaml}]\n", "top.yaml")
    err = _build_error(registry, top, tmp_path)
    assert "mixture cycle: a.yaml -> b.yaml -> a.yaml" in str(err)


@pytest.mark.parametrize("cap", ["0", "-5"])
def test_cap_must_be_positive(registry, tmp_path, cap):
    err = _build_error(registry, _write(tmp_path, f"size: 10\nrate: {{by: examples, cap: {cap}}}\n"
                                                  "components: [{task: t0}]\n"), tmp_path)
    assert "mix.yaml:2" in str(err) and "cap" in str(err)


def test_template_failing_mid_build_names_task_and_row(tmp_path):
    from flanmix.registry import Registry
    from helpers import write_task

    root = tmp_path / "reg"
    root.mkdir()
    # The first template's target needs a field no row has, but only on rows where a is a multiple of 7:
    # the build renders some rows fine, then fails part-way through.
    path = write_task(root, "flaky", "x", 200, cot=False)
    text = path.read_text().replace('target: "{{ answer }}"}', 'target: "{{ answer if a % 7 else missing }}"}', 1)
    path.write_text(text)
    registry = Registry.discover([root], bundled=False, env=False, python=False)
    mix = _write(tmp_path, "size: 300\ntemplate_types: {zs_opt: 1}\ncomponents: [{task: flaky}]\n")
    with pytest.raises(FlanmixError) as info:  # in worker processes too
        build(mix, tmp_path / "out", registry=registry, progress=False, num_proc=2, rows_per_shard=50)
    assert "task 'flaky', row flaky:" in str(info.value)
    err = _build_error(registry, mix, tmp_path)
    assert "task 'flaky', row flaky:" in str(err) and "missing" in str(err)
    assert not list(tmp_path.glob("out*"))  # nothing finalized, temp folder removed
    assert gc.get_freeze_count() == 0  # the objects frozen for rendering are thawed after a failure too


def test_source_failing_mid_build(tmp_path):
    from flanmix.registry import Registry
    from flanmix.sources import register_generator
    from helpers import write_task

    calls = {"n": 0}

    def breaks(rng):
        calls["n"] += 1
        if calls["n"] == 37:
            raise ValueError("upstream went away")
        return {"a": rng.randint(0, 9), "b": rng.randint(0, 9)}

    register_generator("mixtest.breaks", breaks)
    root = tmp_path / "reg"
    root.mkdir()
    write_task(root, "breaks", "x", 100, generator="mixtest.breaks")
    registry = Registry.discover([root], bundled=False, env=False, python=False)
    err = _build_error(registry, _write(tmp_path, "size: 50\ncomponents: [{task: breaks}]\n"), tmp_path)
    assert "breaks" in str(err) and "upstream went away" in str(err) and "row" in str(err)


def test_cli_error_is_one_line_exit_2(tmp_path):
    mix = _write(tmp_path, "size: 10\ncomponents:\n  - {task: no_such_task_anywhere}\n")
    proc = subprocess.run([sys.executable, "-m", "flanmix", "build", str(mix), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "unknown task 'no_such_task_anywhere'" in proc.stderr

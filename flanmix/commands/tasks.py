"""`flanmix tasks list|show|validate` and `flanmix render`: inspect, check and preview registered tasks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flanmix.core.errors import FlanmixError
from flanmix.core.constants import TEMPLATE_TYPES


def add_registry_option(parser: argparse.ArgumentParser) -> None:
    """`--registry DIR` (repeatable): extra task registry folders."""
    parser.add_argument("--registry", action="append", default=[], metavar="DIR",
                        help="extra task registry folder (repeatable; also FLANMIX_REGISTRY=DIR1:DIR2)")


def _registry(args: argparse.Namespace):
    from flanmix.registry import Registry

    return Registry.discover(args.registry)


def cmd_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    tasks = [t for t in registry if not args.cluster or t.cluster == args.cluster]
    rows = [("NAME", "CLUSTER", "SOURCE", "TEMPLATES", "VARIANTS")]
    for task in tasks:
        counts = f"{task.num_templates()}" + (f"+{task.num_templates(cot=True)}cot" if task.has_cot else "")
        rows.append((task.name, task.cluster, task.spec.source.describe(), counts, ",".join(task.variants())))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    clusters = {t.cluster for t in tasks}
    print(f"\n{len(tasks)} tasks in {len(clusters)} clusters")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    task = _registry(args).get(args.name)
    spec = task.spec
    print(f"name:        {spec.name}")
    print(f"description: {spec.description}")
    print(f"cluster:     {spec.cluster}" + (f" (category {spec.category})" if spec.category else ""))
    print(f"collection:  {spec.collection}")
    print(f"source:      {spec.source.describe()}")
    print(f"spec file:   {task.spec_file or '<python>'}")
    print(f"templates:   {task.template_file or '<inline>'}")
    print(f"metrics:     {', '.join(spec.metrics)}")
    print(f"license:     {spec.license or 'unspecified'}")
    print(f"variants:    {', '.join(task.variants())}" + (" (+cot)" if task.has_cot else ""))
    for kind, items in (("zero_shot", task.templates.zero_shot), ("cot", task.templates.cot)):
        for i, tmpl in enumerate(items):
            flag = " [inverted]" if tmpl.inverted else ""
            print(f"  {kind}[{i}]{flag}: {tmpl.input!r} -> {tmpl.target!r}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from flanmix.registry import Registry, load_task_file, spec_files

    problems: list[str] = []
    tasks = []
    if args.paths:
        for raw in args.paths:
            path = Path(raw)
            files = list(spec_files(path)) if path.is_dir() else [path]
            if not path.exists():
                problems.append(str(FlanmixError("file not found", file=path)))
            for file in files:
                try:
                    tasks.append(load_task_file(file, registry_root=path if path.is_dir() else None))
                except FlanmixError as err:
                    problems.append(str(err))
        names: dict[str, Path] = {}
        for task in tasks:
            if task.name in names:
                problems.append(f"{task.spec_file}: name: duplicate task name {task.name!r} "
                                f"(also in {names[task.name]})")
            names.setdefault(task.name, task.spec_file)
    else:
        try:
            tasks = list(Registry.discover(args.registry))
        except FlanmixError as err:
            problems.append(str(err))
    rendered = 0
    for task in tasks:
        try:
            rendered += _render_every_template(task, args.rows)
        except FlanmixError as err:
            problems.append(str(err))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(tasks)} tasks checked, {rendered} renders, {len(problems)} problem(s)")
    return 2 if problems else 0


def _render_every_template(task, rows: int) -> int:
    """Render every template of a task in every variant on the first `rows` examples."""
    examples = (task.examples("train") or task.examples("validation"))[:rows]
    count = 0
    for cot in ([False, True] if task.has_cot else [False]):
        for idx in task.template_indices(cot=cot):
            for variant in TEMPLATE_TYPES:
                if variant.startswith("fs") and len(task.examples("train")) < 2:
                    continue
                for example in examples:
                    task.render(example, template_type=variant, template_idx=idx, cot=cot, randomize_options=True)
                    count += 1
    return count


def cmd_render(args: argparse.Namespace) -> int:
    task = _registry(args).get(args.name)
    examples = task.examples(args.split)
    if not examples:
        raise FlanmixError(f"task {task.name!r} has no {args.split} examples", field="--split")
    indices = task.template_indices(cot=args.cot)
    if args.template is not None:
        indices = [args.template]
    for n in range(args.n):
        example = examples[n % len(examples)]
        row = task.render(example, template_type=args.variant, template_idx=indices[n % len(indices)], cot=args.cot,
                          seed=args.seed, split=args.split, randomize_options=args.random_options)
        header = (f"── {row['task_name']} · {row['template_type']}{' · cot' if row['cot'] else ''} · template "
                  f"{row['template_idx']} · {row['example_id']} ")
        print(header + "─" * max(0, 78 - len(header)))
        print("INPUT:\n" + row["inputs"])
        print("TARGET:\n" + row["targets"])
        print()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    tasks = subparsers.add_parser("tasks", help="list, show and validate registered tasks",
                                  description="List, show and validate registered tasks.")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)

    p = tasks_sub.add_parser("list", help="list tasks (name, cluster, source, templates, variants)")
    add_registry_option(p)
    p.add_argument("--cluster", help="only tasks of this cluster")
    p.set_defaults(func=cmd_list)

    p = tasks_sub.add_parser("show", help="show one task's spec and templates")
    p.add_argument("name")
    add_registry_option(p)
    p.set_defaults(func=cmd_show)

    p = tasks_sub.add_parser("validate", help="parse every spec and template and render each on sample rows",
                             description="Parse every task spec and template set, render every template in every "
                                         "variant on sample rows, and report every problem with file and line.")
    p.add_argument("paths", nargs="*", help="spec files or registry folders (default: every registered task)")
    p.add_argument("--rows", type=int, default=2, help="sample rows rendered per template (default 2)")
    add_registry_option(p)
    p.set_defaults(func=cmd_validate)

    p = subparsers.add_parser("render", help="preview rendered examples of a task",
                              description="Render a few examples of a task in a Flan variant.")
    p.add_argument("name", help="task name")
    p.add_argument("--variant", choices=TEMPLATE_TYPES, default="zs_noopt")
    p.add_argument("--cot", action="store_true", help="use the chain-of-thought templates")
    p.add_argument("-n", type=int, default=3, help="number of examples (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--template", type=int, help="only this template index")
    p.add_argument("--split", choices=["train", "validation"], default="train")
    p.add_argument("--random-options", action="store_true", help="randomized options format (Flan 2022 style)")
    add_registry_option(p)
    p.set_defaults(func=cmd_render)

"""`flanmix tasks list|show|validate` and `flanmix render`: inspect, check and preview registered tasks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flanmix.commands.argtypes import non_negative_int, positive_int
from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError, SourceUnavailable


def add_registry_option(parser: argparse.ArgumentParser) -> None:
    """`--registry DIR` (repeatable): extra task registry folders."""
    parser.add_argument("--registry", action="append", default=[], metavar="DIR",
                        help="extra task registry folder (repeatable; also FLANMIX_REGISTRY=DIR1:DIR2)")
    add_allow_path_option(parser)


def add_allow_path_option(parser: argparse.ArgumentParser) -> None:
    """`--allow-path DIR` (repeatable): a folder outside their registry folder that task specs may read data from
    (docs/security.md); `flanmix.cli` applies it for the duration of the command."""
    parser.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                        help="let task specs read data files under DIR too (repeatable; also "
                             "FLANMIX_ALLOW_PATHS=DIR1:DIR2; see docs/security.md)")


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
    from flanmix.prompts import LIST_NAMES

    for kind in LIST_NAMES:
        for i, tmpl in enumerate(getattr(task.templates, kind) or []):
            flag = " [inverted]" if tmpl.inverted else ""
            source = f" ({tmpl.source})" if tmpl.source else ""
            print(f"  {kind}[{i}]{flag}{source}: {tmpl.input!r} -> {tmpl.target!r}")
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
    from flanmix.hub import using_mirror

    rendered, unreachable = 0, []
    with using_mirror(args.hub_mirror):
        for task in tasks:
            try:
                rendered += _render_every_template(task, args.rows)
            except SourceUnavailable:
                unreachable.append(task.name)
                try:
                    task.prompts  # noqa: B018 - compiling the templates still checks them without rows
                except FlanmixError as err:
                    problems.append(str(err))
            except FlanmixError as err:
                problems.append(str(err))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(tasks)} tasks checked, {rendered} renders, {len(problems)} problem(s)")
    if unreachable:
        print(f"{len(unreachable)} task(s) checked without rows: their data is not reachable here "
              f"(hub sources; give --hub-mirror DIR to render them): {', '.join(unreachable[:5])}"
              f"{' ...' if len(unreachable) > 5 else ''}")
    return 2 if problems else 0


def _render_every_template(task, rows: int) -> int:
    """Render every template of a task in every variant on the first `rows` examples."""
    examples = (task.examples("train") or task.examples("validation"))[:rows]
    count = 0
    from flanmix.fewshot import FewShotDropped

    for cot in ([False, True] if task.has_cot else [False]):
        for variant in TEMPLATE_TYPES:
            if variant.startswith("fs") and len(task.examples("train")) < 2:
                continue
            for idx in task.template_indices(cot=cot, template_type=variant):
                for example in examples:
                    try:
                        task.render(example, template_type=variant, template_idx=idx, cot=cot,
                                    randomize_options=True)
                    except FewShotDropped:  # FLAN drops a few-shot row without exemplars; not a problem
                        pass
                    count += 1
    return count


def cmd_render_batch(args: argparse.Namespace) -> int:
    """One JSON line out per request line in; exit code 2 when any line failed."""
    import json

    from flanmix.batch import render_batch

    failed = 0
    for _, out in render_batch(args.batch, args.registry):
        failed += "error" in out
        print(json.dumps(out, ensure_ascii=False), flush=False)
    sys.stdout.flush()
    return 2 if failed else 0


def cmd_render(args: argparse.Namespace) -> int:
    if args.batch:
        if args.name:
            raise FlanmixError("give a task name or --batch FILE, not both", field="--batch")
        return cmd_render_batch(args)
    if not args.name:
        raise FlanmixError("which task?", field="name", expected="a task name, or --batch FILE.jsonl")
    task = _registry(args).get(args.name)
    examples = task.examples(args.split)
    if not examples:
        raise FlanmixError(f"task {task.name!r} has no {args.split} examples", field="--split")
    from flanmix.fewshot import FewShotDropped

    indices = task.template_indices(cot=args.cot, template_type=args.variant)
    if args.template is not None:
        indices = [args.template]
    if not indices:
        raise FlanmixError(f"task {task.name!r} has no {args.variant} templates", field="--variant",
                           expected=", ".join(task.variants()))
    for n in range(args.n):
        example = examples[n % len(examples)]
        idx = indices[n % len(indices)]
        header = (f"── {task.name} · {args.variant}{' · cot' if args.cot else ''} · template {idx} · "
                  f"{example.example_id} ")
        print(header + "─" * max(0, 78 - len(header)))
        try:
            row = task.render(example, template_type=args.variant, template_idx=idx, cot=args.cot, seed=args.seed,
                              split=args.split, randomize_options=args.random_options)
        except FewShotDropped:
            print("(no exemplar left: FLAN drops this few-shot row)\n")
            continue
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
    p.add_argument("--rows", type=non_negative_int, default=2, help="sample rows rendered per template (default 2)")
    p.add_argument("--hub-mirror", action="append", default=[], metavar="DIR",
                   help="read hub and repo sources from this mirror (also FLANMIX_HUB_MIRROR); without one, tasks "
                        "whose data is not reachable are checked without rows")
    add_registry_option(p)
    p.set_defaults(func=cmd_validate)

    p = subparsers.add_parser("render", help="preview rendered examples of a task, or render a batch of requests",
                              description="Render a few examples of a task in a Flan variant, or (--batch) render "
                                          "one JSON request per line of a file and print one JSON line per request.")
    p.add_argument("name", nargs="?", help="task name")
    p.add_argument("--batch", metavar="FILE.jsonl",
                   help='requests {"templates": TASK_OR_SET, "variant": V, "template": K, "row": {...}, '
                        '"cot": false}, one per line; prints {"inputs", "targets"} (or {"line", "error"}) per line')
    p.add_argument("--variant", choices=TEMPLATE_TYPES, default="zs_noopt")
    p.add_argument("--cot", action="store_true", help="use the chain-of-thought templates")
    p.add_argument("-n", type=positive_int, default=3, help="number of examples (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--template", type=int, help="only this template index")
    p.add_argument("--split", choices=["train", "validation"], default="train")
    p.add_argument("--random-options", action="store_true", help="randomized options format (Flan 2022 style)")
    add_registry_option(p)
    p.set_defaults(func=cmd_render)

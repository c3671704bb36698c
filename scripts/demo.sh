#!/usr/bin/env bash
# The main job on the bundled default: list the tasks, preview Flan-style renders, validate every template.
# Run through `make demo` (which creates .venv first); everything stays offline.
set -euo pipefail
cd "$(dirname "$0")/.."
FLANMIX="${FLANMIX:-.venv/bin/flanmix}"
OUT="${DEMO_OUT:-out/demo}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Registered tasks"
"$FLANMIX" tasks list

step "A zero-shot prompt with answer options, and a few-shot chain-of-thought prompt"
"$FLANMIX" render arith_add --variant zs_opt -n 1 --random-options
"$FLANMIX" render arith_add --variant fs_noopt --cot -n 1

step "Validate every task spec and template"
"$FLANMIX" tasks validate

#!/usr/bin/env bash
# The main job on the bundled default, offline: tasks -> renders -> demo mixture -> tiny model -> eval ->
# SFT -> RM -> DPO -> eval. Run through `make demo` (which creates .venv first). Outputs: out/, runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
FLANMIX="${FLANMIX:-.venv/bin/flanmix}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Tiny models train fastest on one thread per process; a second spinning thread on a 2-core machine costs more
# than it gains. Override with OMP_NUM_THREADS=N for bigger models.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
EVAL_TASKS=(--tasks cluster:arithmetic --tasks cluster:strings --tasks cluster:lists --tasks cluster:logic
            --tasks cluster:classification --tasks cluster:word_problems)
# 40 held-out rows per task: with 20, one answer more or less moves a cluster by 0.01-0.02, the size of the effects
# the preference stage has at this scale.
EVAL_LIMIT=40

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Registered tasks"
"$FLANMIX" tasks list

step "A zero-shot prompt with randomized answer options, and a few-shot chain-of-thought prompt"
"$FLANMIX" render cls_parity --variant zs_opt -n 1 --random-options
"$FLANMIX" render wp_two_step --variant fs_noopt --cot -n 1

step "Validate every task spec and template"
"$FLANMIX" tasks validate

step "Build the demo mixture (mixtures/demo.yaml) and show its proportions"
"$FLANMIX" build demo --out out/demo --overwrite
"$FLANMIX" stats out/demo --plot out/demo/mix.png

step "A tiny random Llama-style model and a BPE tokenizer trained on the bundled tasks (no download)"
"$FLANMIX" init-model --size tiny --out runs/tiny --overwrite

step "Preference pairs from the bundled tasks (correct vs perturbed answers)"
"$FLANMIX" prefs generate --tasks cluster:strings cluster:lists cluster:arithmetic --n 150 \
    --out out/prefs/train.jsonl

step "Evaluate the untrained model on held-out rows of every bundled task"
"$FLANMIX" eval runs/tiny "${EVAL_TASKS[@]}" --limit "$EVAL_LIMIT" --out runs/eval-untrained.json --quiet

step "Train SFT -> RM -> DPO + NLL (configs/pipelines/demo.yaml; rerun to resume)"
"$FLANMIX" train configs/pipelines/demo.yaml

step "Evaluate the SFT model and the DPO model"
"$FLANMIX" eval runs/pipeline-demo/sft/final "${EVAL_TASKS[@]}" --limit "$EVAL_LIMIT" --out runs/eval-sft.json --quiet
"$FLANMIX" eval runs/pipeline-demo/dpo/final "${EVAL_TASKS[@]}" --limit "$EVAL_LIMIT" --out runs/eval-dpo.json --quiet

step "Summary"
.venv/bin/python - <<'PY'
import json
for name in ("untrained", "sft", "dpo"):
    report = json.load(open(f"runs/eval-{name}.json"))
    overall = report["overall"]
    clusters = "  ".join(f"{c}={v['score']:.2f}" for c, v in sorted(report["clusters"].items()))
    print(f"{name:>9}: exact match, macro over tasks {overall['score']:.3f} | {clusters}")

# Held-out preference pairs (the split the DPO stage held out): how often each model gives the correct answer the
# higher (length-normalised) log-probability.
from trainers.models import load_tokenizer
from trainers.policy import load_policy, preference_accuracy
from trainers.preference import encode_groups, load_split, pad_id_of

_, held_out = load_split("out/prefs/train.jsonl", None, 0.1, 0)
accs = []
for name in ("sft", "dpo"):
    path = f"runs/pipeline-demo/{name}/final"
    tok = load_tokenizer(path)
    accs.append(preference_accuracy(load_policy(path), encode_groups(tok, held_out, 192), pad_id_of(tok)))
print(f"preference accuracy on {len(held_out)} held-out pairs (strings, lists, arithmetic): "
      f"sft {accs[0]:.3f} -> dpo {accs[1]:.3f}")
PY

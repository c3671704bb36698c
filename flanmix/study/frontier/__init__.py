"""The reward–KL frontier of PPO, DPO, IPO and RRHF on a task with a known reward (the DPO paper's controlled
experiment, Figure 2), at laptop scale.

    flanmix study frontier configs/frontier/demo.yaml --out runs/frontier

From one SFT model, each method is trained at several values of its own knob (PPO: KL coefficient; DPO/IPO: β;
RRHF: e.g. learning rate) on the same task, and every run is measured at several checkpoints on held-out prompts:
the true reward of its samples and the Monte-Carlo sequence KL to the SFT model (`sampling`), plus its win rate
against the SFT model at several sampling temperatures.

    spec      the YAML schema and loader (each run's stage config is checked against the stage's schema)
    data      prompts and SFT rows from the task; rankings of SFT samples by the true reward
    sampling  sampling, sequence log-probabilities and the KL estimator
    measure   one frontier point (reward, KL) and win rates; loading a checkpoint's policy
    runner    run / resume a study
    report    results.csv / .jsonl / .md and the two plots
"""

from flanmix.study.frontier.report import write_reports
from flanmix.study.frontier.runner import run
from flanmix.study.frontier.spec import FrontierSpec, load_spec

__all__ = ["FrontierSpec", "load_spec", "run", "write_reports"]

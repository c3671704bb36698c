"""The study layer: evaluation (`flanmix.study.eval`), scaling ablations (`flanmix.study.ablation`) and the
reward–KL frontier of the alignment methods (`flanmix.study.frontier`).

It sits on top of the data side and `trainers/` (it builds mixtures, trains and scores models); only the CLI
imports it.
"""

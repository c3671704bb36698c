"""The study layer: evaluation (`flanmix.study.eval`) and scaling ablations (`flanmix.study.ablation`).

It sits on top of the data side and `trainers/` (it builds mixtures, trains and scores models); only the CLI
imports it.
"""

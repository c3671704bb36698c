"""flanmix's training layer: SFT, reward model, DPO, RRHF and PPO on one accelerate training loop.

It reads the files that `flanmix build` and `flanmix prefs` write, and imports only `flanmix.core` and the data
side (e.g. `flanmix.preferences`), never `flanmix.study` or the CLI. Layout: `stages` (the registry) -> one module
per stage (`sft`, `rm`, `dpo`, `rrhf`, `ppo`; they never import each other) -> shared modules (`loop` and its
parts, `protocol`, `config`, `losses/`, `data`, `packing`, `preference`, `policy`, `rewards`, `logprobs`,
`models`).
"""

"""flanmix's training layer: SFT, reward model, PPO, RRHF and DPO on one accelerate training loop.

It reads the files that `flanmix build` writes (Parquet/JSONL + manifest); it does not import flanmix internals.
"""

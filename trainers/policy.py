"""What the policy-training preference stages (DPO, RRHF) share: loading the policy, its held-out preference
accuracy, and a stage base that evaluates and saves it."""

from __future__ import annotations

from pathlib import Path

import torch

from trainers.adapters import is_adapter_dir, load_merged, load_quantized
from trainers.config import PeftSettings
from trainers.logprobs import sequence_logprobs
from trainers.models import load_model
from trainers.preference import GroupDataStage, collate


def load_policy(path: str | Path, peft: PeftSettings | None = None):
    """The policy (or a reference / sampling model): a causal LM from a local folder, with one-line errors. An
    adapter folder (a LoRA run's output) gives its base with the adapter merged in; `peft.qlora` loads the weights
    in 4-bit (the stage then wraps the model with `trainers.adapters.wrap`)."""
    if peft is not None and peft.qlora:
        return load_quantized(path, peft)
    if is_adapter_dir(path):
        return load_merged(path)
    return load_model(path)  # decoder-only or encoder-decoder (T5: DPO/RRHF on the decoder's log-probs)


@torch.no_grad()
def preference_accuracy(model, encoded_groups, pad_id: int, batch_size: int = 32, average: bool = True) -> float:
    """Fraction of held-out (better, worse) pairs where the policy gives the better response the higher
    (length-normalised by default) log-probability."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for i in range(0, len(encoded_groups), batch_size):
        b = collate(encoded_groups[i: i + batch_size], pad_id)
        lp = sequence_logprobs(model, b["input_ids"].to(device), b["attention_mask"].to(device),
                               b["loss_mask"].to(device), average=average).cpu()
        d = lp[b["pair_chosen"]] - lp[b["pair_rejected"]]
        correct += int((d > 0).sum())
        total += d.numel()
    model.train(was)
    return correct / max(total, 1)


class PolicyPreferenceStage(GroupDataStage):
    """A policy trained on preference groups: its held-out metric is how often it prefers the chosen (higher-scored)
    response; it is saved as a plain transformers folder."""

    def evaluate(self, ctx) -> dict:
        if not self.eval_groups:
            return {}
        model = ctx.unwrapped if ctx is not None else self.model
        return {"eval_preference_accuracy": preference_accuracy(model, self.eval_groups, self.pad_id)}

    def save(self, ctx, out_dir: Path) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model) if ctx is not None else self.model
        model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)

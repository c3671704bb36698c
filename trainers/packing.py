"""Collation: padded batches and padding-free packed rows.

Every collator returns *shifted* labels: `labels[:, t]` is the target for the logits at position t (-100 = no
loss), so the loss is a plain cross-entropy over the positions where labels != -100, with no slicing in the model.

Packing concatenates several tokenized examples ("documents") into one row of at most `max_length` tokens.
Documents must not see each other:
  * `position_ids` restart at 0 for every document. transformers >= 5 detects this (with attention_mask=None and no
    cache) and builds a block-diagonal causal mask itself for the eager and sdpa backends (and uses varlen kernels
    for flash attention); verified in tests/train/test_packing.py to give the same loss as unpacked batches.
  * the last token of a document has no target (it would otherwise be trained to predict the next document's
    first token): with shifted labels this is "the first label of each document is masked".
  * for models that do not read packing from position_ids, `collate_packed(..., mask="4d")` also returns an
    explicit additive 4D block-diagonal causal mask.
The SFT stage checks the model with `keeps_documents_apart` before it packs (position_ids, else the 4D mask, else
no packing, with a note); encoder-decoder models are never packed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainers.data import IGNORE


def pack_greedy(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Assign documents (by index) to rows of total length <= max_length: best-fit decreasing.

    Deterministic (ties broken by index); typically leaves < 1% of a row empty. Each inner list keeps the original
    index order, so a row reads like the source data.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    # rows_by_space[s] = ids of rows that have exactly s free tokens left
    rows: list[list[int]] = []
    space: list[int] = []
    rows_by_space: dict[int, list[int]] = {}
    for i in order:
        n = lengths[i]
        if n > max_length:
            raise ValueError(f"document {i} has {n} tokens > max_length {max_length}")
        best = None
        for s in range(n, max_length + 1):  # smallest free space that fits
            bucket = rows_by_space.get(s)
            if bucket:
                best = bucket.pop()
                break
        if best is None:
            best = len(rows)
            rows.append([])
            space.append(max_length)
        rows[best].append(i)
        space[best] -= n
        rows_by_space.setdefault(space[best], []).append(best)
    return [sorted(r) for r in rows]


def shift_labels(labels: list[int]) -> list[int]:
    """Unshifted per-token labels of ONE document -> targets aligned with logits (last position: no target)."""
    return labels[1:] + [IGNORE]


def collate_padded(examples: Sequence[dict], pad_id: int, *, pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (shifted). Padded to the longest example."""
    longest = max(len(e["input_ids"]) for e in examples)
    if pad_to_multiple_of > 1:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    n = len(examples)
    input_ids = torch.full((n, longest), pad_id, dtype=torch.long)
    labels = torch.full((n, longest), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((n, longest), dtype=torch.long)
    for r, e in enumerate(examples):
        k = len(e["input_ids"])
        input_ids[r, :k] = torch.tensor(e["input_ids"], dtype=torch.long)
        labels[r, :k] = torch.tensor(shift_labels(e["labels"]), dtype=torch.long)
        attention_mask[r, :k] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_packed(rows: Sequence[Sequence[dict]], pad_id: int, *, mask: str = "position_ids",
                   dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Packed batch from rows of documents: input_ids, position_ids, labels (shifted), no padding inside a row.

    Rows are right-padded to the longest row; the padding forms its own "document" (positions from 0, no labels).
    mask="position_ids": no attention_mask (transformers derives the block-diagonal mask from position_ids).
    mask="4d": also an additive [B, 1, T, T] block-diagonal causal mask in `dtype`.
    """
    lengths = [sum(len(d["input_ids"]) for d in row) for row in rows]
    longest = max(lengths)
    n = len(rows)
    input_ids = torch.full((n, longest), pad_id, dtype=torch.long)
    labels = torch.full((n, longest), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((n, longest), dtype=torch.long)
    for r, row in enumerate(rows):
        ids: list[int] = []
        lab: list[int] = []
        pos: list[int] = []
        for d in row:
            ids.extend(d["input_ids"])
            lab.extend(shift_labels(d["labels"]))
            pos.extend(range(len(d["input_ids"])))
        k = len(ids)
        input_ids[r, :k] = torch.tensor(ids, dtype=torch.long)
        labels[r, :k] = torch.tensor(lab, dtype=torch.long)
        position_ids[r, :k] = torch.tensor(pos, dtype=torch.long)
        position_ids[r, k:] = torch.arange(longest - k)
    batch = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}
    if mask == "4d":
        batch["attention_mask"] = block_diagonal_mask(position_ids, dtype)
    elif mask != "position_ids":
        raise ValueError(f"unknown packing mask mode {mask!r}")
    return batch


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] index of the document each token belongs to (a new document starts wherever position_ids == 0)."""
    return (position_ids == 0).long().cumsum(-1)


def block_diagonal_mask(position_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive [B, 1, T, T] mask: 0 where query t may attend key s (same document, s <= t), else dtype's min."""
    doc = document_ids(position_ids)
    t = position_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    allowed = (doc[:, :, None] == doc[:, None, :]) & causal
    out = torch.zeros(allowed.shape, dtype=dtype)
    out.masked_fill_(~allowed, torch.finfo(dtype).min)
    return out[:, None]


@torch.no_grad()
def keeps_documents_apart(model, mask: str = "position_ids") -> bool:
    """True if `model` reads a packed row (`collate_packed(..., mask=mask)`) as separate documents: the logits of
    two short random documents packed into one row equal those of each document run alone.

    A probe rather than a list of architectures: it checks the model class, its attention implementation and the
    installed transformers together. Eval mode, no gradients, its own RNG (the run's random state is untouched).
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        vocab = model.get_input_embeddings().num_embeddings
        g = torch.Generator().manual_seed(0)
        docs = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (5, 4)]
        batch = collate_packed([[{"input_ids": d, "labels": d} for d in docs]], 0, mask=mask,
                               dtype=dtype if dtype.is_floating_point else torch.float32)
        kwargs = {k: batch[k].to(device) for k in ("input_ids", "position_ids", "attention_mask") if k in batch}
        packed = model(**kwargs, use_cache=False).logits[0].float()
        alone = torch.cat([model(input_ids=torch.tensor([d], device=device), use_cache=False).logits[0].float()
                           for d in docs])
    finally:
        model.train(was_training)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    return bool(torch.allclose(packed, alone, atol=tol * (1 + float(alone.abs().max())), rtol=0))

"""Create a fresh, randomly initialised Llama-style causal LM and a byte-level BPE tokenizer trained locally.

Nothing is downloaded: the tokenizer is trained with `tokenizers` on a list of texts (by default the bundled task
text from `flanmix.corpus.bundled_corpus`), the model is built from a `LlamaConfig`. The result is an ordinary
transformers folder (`config.json`, `model.safetensors`, `tokenizer.json`, ...) that `AutoModelForCausalLM` and
`AutoTokenizer` load, so every later stage treats it like any other local model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flanmix.core.atomic import atomic_dir
from flanmix.core.errors import FlanmixError
from flanmix.corpus import bundled_corpus
from trainers.data import read_rows

# torch, transformers and tokenizers are imported inside the functions that build models: importing this module
# (for SIZES, e.g. by the ablation spec) stays cheap.

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# One turn is "<|role|>\ncontent</s>\n". The newlines are written as {{ '\n' }} because a newline right after a
# {% %} tag is dropped by the template engine.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}{{ '\n' }}{{ message['content'] }}{{ eos_token }}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{{ '\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ModelSize:
    """Shape of one rung of the size ladder (vocab size is chosen separately)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int = 2048


SIZES: dict[str, ModelSize] = {
    s.name: s
    for s in (
        ModelSize("nano", hidden=64, layers=2, heads=4, kv_heads=4, intermediate=384),
        ModelSize("tiny", hidden=128, layers=2, heads=4, kv_heads=4, intermediate=512),
        ModelSize("mini", hidden=256, layers=4, heads=8, kv_heads=8, intermediate=768),
        ModelSize("small", hidden=384, layers=6, heads=6, kv_heads=6, intermediate=1024),
        ModelSize("base", hidden=512, layers=8, heads=8, kv_heads=8, intermediate=1280),
        ModelSize("medium", hidden=640, layers=10, heads=10, kv_heads=10, intermediate=1728),
        ModelSize("large", hidden=768, layers=14, heads=12, kv_heads=12, intermediate=2048),
    )
}
DEFAULT_VOCAB = 4096


def llama_config(size: str | ModelSize, vocab_size: int, *, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
    """The `LlamaConfig` for a named size (tied embeddings, no biases, RMSNorm, RoPE)."""
    from transformers import LlamaConfig

    spec = size if isinstance(size, ModelSize) else _size(size)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        use_cache=True,
    )


def count_params(size: str | ModelSize, vocab_size: int = DEFAULT_VOCAB) -> int:
    """Exact parameter count of a named size (built on the meta device, so it costs no memory)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(size, vocab_size))
    return sum(p.numel() for p in model.parameters())


def list_sizes(vocab_size: int = DEFAULT_VOCAB) -> list[dict]:
    """Every named size with its shape and parameter count, smallest first (for docs and `--list-sizes`)."""
    rows = []
    for spec in SIZES.values():
        rows.append({
            "name": spec.name, "hidden": spec.hidden, "layers": spec.layers, "heads": spec.heads,
            "intermediate": spec.intermediate, "vocab": vocab_size, "params": count_params(spec, vocab_size),
        })
    return rows


def format_params(n: int) -> str:
    """1234567 -> '1.23M'."""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def _size(name: str) -> ModelSize:
    if name not in SIZES:
        raise FlanmixError(f"unknown model size {name!r}", field="size", expected=" | ".join(SIZES))
    return SIZES[name]


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB):
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a `PreTrainedTokenizerFast`.

    Special tokens: <pad>=0, <s>=1 (prepended by the tokenizer, like Llama), </s>=2, then chat role markers. Any
    byte sequence is encodable (the 256 byte symbols are always in the vocabulary).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, BOS, EOS, *ROLE_TOKENS]
    if vocab_size < 256 + len(specials) + 1:
        raise FlanmixError(f"vocab size {vocab_size} is too small", field="vocab_size",
                           expected=f">= {256 + len(specials) + 1}")
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_nonempty(texts), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="right",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _nonempty(texts: Iterable[str]) -> Iterable[str]:
    n = 0
    for t in texts:
        if t:
            n += 1
            yield t
    if n == 0:
        raise FlanmixError("the tokenizer corpus is empty", field="corpus", expected="at least one non-empty text")


def read_corpus(path: str | Path) -> list[str]:
    """Texts from a local file: .jsonl/.parquet (inputs/targets, prompt/completion, text or messages) or plain text
    (one document per line)."""
    path = Path(path)
    if not path.exists():
        raise FlanmixError("corpus file not found", file=path)
    if path.suffix in (".jsonl", ".json", ".parquet") or path.is_dir():
        texts = []
        for row in read_rows(path):
            for key in ("inputs", "targets", "prompt", "completion", "text"):
                if isinstance(row.get(key), str):
                    texts.append(row[key])
            for m in row.get("messages") or []:
                if isinstance(m, dict) and isinstance(m.get("content"), str):
                    texts.append(m["content"])
        return texts
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def default_corpus() -> list[str]:
    """The bundled task text (rendered Flan-style examples) that ships with flanmix."""
    return list(bundled_corpus())


def init_model(
    size: str,
    out: str | Path,
    *,
    vocab_size: int = DEFAULT_VOCAB,
    texts: Sequence[str] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Train a tokenizer on `texts` (default: bundled corpus), build a random `size` model, save both to `out`.

    Returns {"path", "size", "params", "vocab_size"}. The folder is written atomically.
    """
    import torch
    from transformers import LlamaForCausalLM

    spec = _size(size)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FlanmixError("output folder exists and is not empty", file=out, expected="a new folder or --overwrite")
    tokenizer = train_tokenizer(default_corpus() if texts is None else texts, vocab_size)
    vocab = len(tokenizer)
    config = llama_config(spec, vocab, pad_id=tokenizer.pad_token_id, bos_id=tokenizer.bos_token_id,
                          eos_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    params = sum(p.numel() for p in model.parameters())

    with atomic_dir(out, replace=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return {"path": str(out), "size": spec.name, "params": params, "vocab_size": vocab}

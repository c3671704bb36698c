"""Create a fresh, randomly initialised model of a known architecture and a tokenizer trained locally.

Nothing is downloaded: the tokenizer is trained with `tokenizers` on a list of texts (by default the bundled task
text from `flanmix.corpus.bundled_corpus`): byte-level BPE for the decoder-only archs, SentencePiece-style Unigram
for T5. The model is built from its transformers config (`trainers.archs`). The result is an ordinary transformers
folder (`config.json`, `model.safetensors`, `tokenizer.json`, ...) that the Auto classes load, so every later stage
treats it like any other local model. The default arch is `llama`, the size ladder's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flanmix.core.atomic import atomic_dir
from flanmix.core.errors import FlanmixError
from flanmix.corpus import bundled_corpus
from trainers.archs import (
    ARCHS,
    LLAMA_CHAT_TEMPLATE,
    QWEN2_SPLIT,
    ROLE_TOKENS,
    STYLES,
    TokenizerStyle,
    arch_config,
    check_arch,
    untie_t5_output,
)
from trainers.archs import model_class as arch_model_class
from trainers.data import read_rows

# torch, transformers and tokenizers are imported inside the functions that build models: importing this module
# (for SIZES, e.g. by the ablation spec) stays cheap.

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
CHAT_TEMPLATE = LLAMA_CHAT_TEMPLATE
__all__ = ["ARCHS", "CHAT_TEMPLATE", "ROLE_TOKENS", "SIZES", "T5_SIZES", "init_model", "list_sizes",
           "train_tokenizer"]


@dataclass(frozen=True)
class ModelSize:
    """Shape of one rung of the size ladder (vocab size is chosen separately)."""

    name: str
    hidden: int
    layers: int                  # decoder layers (T5: layers of each of the encoder and the decoder)
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int = 2048
    head_dim: int | None = None  # None: hidden // heads (T5 rungs keep T5's d_kv = 64 from `mini` up)


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
# The same rung names for T5 (gated-GELU feed-forward, untied embeddings, as T5 v1.1 / Flan-T5). From `small` up
# the rungs have Flan-T5's own shapes: small = Flan-T5-small (d_model 512, d_ff 1024, 6 heads of 64, 8+8 layers),
# base = Flan-T5-base (768, 2048, 12, 12+12), large = Flan-T5-large (1024, 2816, 16, 24+24).
T5_SIZES: dict[str, ModelSize] = {
    s.name: s
    for s in (
        ModelSize("nano", hidden=64, layers=2, heads=4, kv_heads=4, intermediate=256, head_dim=16),
        ModelSize("tiny", hidden=128, layers=2, heads=4, kv_heads=4, intermediate=384, head_dim=32),
        ModelSize("mini", hidden=256, layers=4, heads=4, kv_heads=4, intermediate=768, head_dim=64),
        ModelSize("small", hidden=512, layers=8, heads=6, kv_heads=6, intermediate=1024, head_dim=64),
        ModelSize("base", hidden=768, layers=12, heads=12, kv_heads=12, intermediate=2048, head_dim=64),
        ModelSize("medium", hidden=1024, layers=16, heads=16, kv_heads=16, intermediate=2816, head_dim=64),
        ModelSize("large", hidden=1024, layers=24, heads=16, kv_heads=16, intermediate=2816, head_dim=64),
    )
}
DEFAULT_VOCAB = 4096


def ladder(arch: str = "llama") -> dict[str, ModelSize]:
    """The size ladder of an architecture (T5 has its own shapes; decoder-only archs share the Llama ladder)."""
    return T5_SIZES if check_arch(arch) == "t5" else SIZES


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


def build_config(arch: str, spec: ModelSize, vocab_size: int, ids: dict[str, int | None]):
    """The transformers config of `arch` at rung `spec` with the tokenizer's special ids (`pad`, `bos`, `eos`)."""
    if arch == "llama":
        return llama_config(spec, vocab_size, pad_id=ids["pad"], bos_id=ids["bos"], eos_id=ids["eos"])
    return arch_config(arch, spec, vocab_size, ids)


def count_params(size: str | ModelSize, vocab_size: int = DEFAULT_VOCAB, arch: str = "llama") -> int:
    """Exact parameter count of a named size (built on the meta device, so it costs no memory)."""
    import torch

    spec = size if isinstance(size, ModelSize) else _size(size, arch)
    ids = {"pad": 0, "bos": None if arch == "t5" else 1, "eos": 1 if arch == "t5" else 2}
    with torch.device("meta"):
        model = arch_model_class(arch)(build_config(arch, spec, vocab_size, ids))
        if arch == "t5":
            untie_t5_output(model)
    return sum(p.numel() for p in model.parameters())


def list_sizes(vocab_size: int = DEFAULT_VOCAB, arch: str = "llama") -> list[dict]:
    """Every named size with its shape and parameter count, smallest first (for docs and `--list-sizes`)."""
    rows = []
    for spec in ladder(arch).values():
        rows.append({
            "name": spec.name, "hidden": spec.hidden, "layers": spec.layers, "heads": spec.heads,
            "intermediate": spec.intermediate, "vocab": vocab_size, "params": count_params(spec, vocab_size, arch),
        })
    return rows


def format_params(n: int) -> str:
    """1234567 -> '1.23M'."""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def _size(name: str, arch: str = "llama") -> ModelSize:
    sizes = ladder(arch)
    if name not in sizes:
        raise FlanmixError(f"unknown model size {name!r}", field="size", expected=" | ".join(sizes))
    return sizes[name]


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB, arch: str = "llama", *,
                    extra_ids: int = 0):
    """Train the tokenizer of `arch` on `texts` and wrap it as a `PreTrainedTokenizerFast`.

    llama (the default): byte-level BPE with <pad>=0, <s>=1 (prepended by the tokenizer), </s>=2, then chat role
    markers. Other archs: see `trainers.archs.STYLES`. A BPE tokenizer encodes any byte sequence (the 256 byte
    symbols are always in the vocabulary); T5's Unigram maps unseen characters to <unk>, as T5's own does.
    `extra_ids`: T5's sentinel tokens <extra_id_0..n-1> (appended last, <extra_id_0> with the highest id).
    """
    style = STYLES[check_arch(arch)]
    if style.kind == "unigram":
        return _train_unigram(texts, vocab_size, style, extra_ids)
    return _train_bpe(texts, vocab_size, style)


def _train_bpe(texts: Iterable[str], vocab_size: int, style: TokenizerStyle):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = list(style.specials)
    if vocab_size < 256 + len(specials) + 1:
        raise FlanmixError(f"vocab size {vocab_size} is too small", field="vocab_size",
                           expected=f">= {256 + len(specials) + 1}")
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    if style.qwen2_split:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
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
    if style.add_bos:
        bos_id = tok.token_to_id(style.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{style.bos} $A", pair=f"{style.bos} $A $B", special_tokens=[(style.bos, bos_id)]
        )
    return _wrap(tok, style)


def _train_unigram(texts: Iterable[str], vocab_size: int, style: TokenizerStyle, extra_ids: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = list(style.specials)
    if vocab_size < 64 + len(specials) + extra_ids:
        raise FlanmixError(f"vocab size {vocab_size} is too small", field="vocab_size",
                           expected=f">= {64 + len(specials) + extra_ids}")
    tok = Tokenizer(models.Unigram())
    # T5's normalisation without its precompiled NFKC table: no leading/trailing space, runs of spaces collapsed.
    tok.normalizer = normalizers.Sequence([normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size - extra_ids, special_tokens=specials,
                                      unk_token=style.unk, show_progress=False, max_piece_length=16)
    tok.train_from_iterator(_nonempty(texts), trainer=trainer)
    sentinels = [f"<extra_id_{i}>" for i in reversed(range(extra_ids))]
    if sentinels:
        tok.add_special_tokens(sentinels)
    eos_id = tok.token_to_id(style.eos)
    tok.post_processor = processors.TemplateProcessing(  # T5 ends every encoded text with </s>
        single=f"$A {style.eos}", pair=f"$A {style.eos} $B {style.eos}", special_tokens=[(style.eos, eos_id)]
    )
    return _wrap(tok, style, extra=tuple(reversed(sentinels)))


def _wrap(tok, style: TokenizerStyle, extra: tuple[str, ...] = ()):
    """A `PreTrainedTokenizerFast` around a trained `tokenizers.Tokenizer` with the style's special tokens."""
    from transformers import PreTrainedTokenizerFast

    named = {k: v for k, v in (("bos_token", style.bos), ("eos_token", style.eos), ("pad_token", style.pad),
                                ("unk_token", style.unk)) if v is not None}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **named,
        additional_special_tokens=list(style.extra + extra),
        padding_side="right",
        model_max_length=512 if style.kind == "unigram" else 2048,
        clean_up_tokenization_spaces=False,
    )
    if style.chat_template:
        fast.chat_template = style.chat_template
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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise FlanmixError(f"not UTF-8 text (byte {err.start} cannot be decoded)", file=path, field="corpus",
                           expected="a text file, .jsonl or .parquet") from None
    except OSError as err:
        raise FlanmixError(f"cannot read: {err.strerror or err}", file=path, field="corpus") from None
    return [line for line in text.splitlines() if line.strip()]


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
    arch: str = "llama",
    extra_ids: int = 0,
) -> dict:
    """Train a tokenizer on `texts` (default: bundled corpus), build a random `size` model of architecture `arch`
    (`trainers.archs.ARCHS`), save both to `out`.

    Returns {"path", "size", "arch", "params", "vocab_size"}. The folder is written atomically.
    """
    import torch

    spec = _size(size, arch)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FlanmixError("output folder exists and is not empty", file=out, expected="a new folder or --overwrite")
    tokenizer = train_tokenizer(default_corpus() if texts is None else texts, vocab_size, arch, extra_ids=extra_ids)
    vocab = len(tokenizer)
    ids = {"pad": tokenizer.pad_token_id, "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id}
    config = build_config(arch, spec, vocab, ids)
    torch.manual_seed(seed)
    model = arch_model_class(arch)(config)
    if arch == "t5":
        untie_t5_output(model)
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    if arch == "t5":
        gen.decoder_start_token_id = tokenizer.pad_token_id
    params = sum(p.numel() for p in model.parameters())

    with atomic_dir(out, replace=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return {"path": str(out), "size": spec.name, "arch": arch, "params": params, "vocab_size": vocab}

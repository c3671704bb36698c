"""The architectures `flanmix init-model --arch` builds: each one's config from a ladder rung and the shape of its
locally trained tokenizer, with the quirks of the real checkpoints it stands for.

    arch      stands for            tokenizer                                         model
    llama     Llama 2/3             BPE, adds BOS <s>, pad <pad>                      RoPE, tied (the ladder's own)
    qwen2     Qwen2 / Qwen2.5       BPE (Qwen2 split), no BOS, eos <|im_end|>,        GQA, untied, ChatML template
                                    pad <|endoftext|>
    mistral   Mistral 7B            BPE, adds BOS <s>, NO pad token (pad = eos)       GQA, sliding window, untied
    gpt2      GPT-2                 BPE, <|endoftext|> = bos = eos, no pad, no BOS    learned absolute positions, tied
    gpt_neox  Pythia / GPT-NeoX     BPE, <|endoftext|> = bos = eos, no pad, no BOS    partial rotary, parallel
                                                                                      residual, untied
    gemma     Gemma                 BPE, adds BOS <bos>, pad <pad> = 0                MQA, scaled embeddings, tied
    t5        T5 v1.1 / Flan-T5     Unigram, pad 0, eos </s> 1 appended, unk 2        encoder-decoder, gated-GELU,
                                                                                      relative positions, untied
                                                                                      output, not scaled (below)

Nothing here downloads anything; torch and transformers are imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from flanmix.core.errors import FlanmixError

# One turn is "<|role|>\ncontent</s>\n". The newlines are written as {{ '\n' }} because a newline right after a
# {% %} tag is dropped by the template engine.
LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}{{ '\n' }}{{ message['content'] }}{{ eos_token }}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{{ '\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] }}{{ '\n' }}{{ message['content'] + '<|im_end|>' }}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant' }}{{ '\n' }}{% endif %}"
)
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")


@dataclass(frozen=True)
class TokenizerStyle:
    """The special tokens of a tokenizer (ids 0, 1, ... in `specials` order) and what it adds by itself."""

    kind: str                          # "bpe" (byte-level) | "unigram" (SentencePiece-style, T5)
    specials: tuple[str, ...]
    eos: str
    bos: str | None = None
    pad: str | None = None             # None: the checkpoint has no pad token (loading sets pad = eos)
    unk: str | None = None
    add_bos: bool = False              # tokenizer(text) starts with BOS
    add_eos: bool = False              # tokenizer(text) ends with EOS (T5's encoder inputs)
    extra: tuple[str, ...] = ()        # additional special tokens (chat role markers)
    chat_template: str | None = None
    qwen2_split: bool = False          # Qwen2's pre-tokenizer (digits one by one) and NFC, as its tokenizer class
                                       # rebuilds them on load


#: Qwen2's pre-tokenization pattern (transformers' Qwen2Tokenizer): AutoTokenizer rebuilds a qwen2 folder's
#: tokenizer with it, so the vocabulary must be trained with it too.
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
               r"""\s*[\r\n]+|\s+(?!\S)|\s+""")


STYLES: dict[str, TokenizerStyle] = {
    "llama": TokenizerStyle("bpe", ("<pad>", "<s>", "</s>", *ROLE_TOKENS), eos="</s>", bos="<s>", pad="<pad>",
                            add_bos=True, extra=ROLE_TOKENS, chat_template=LLAMA_CHAT_TEMPLATE),
    "qwen2": TokenizerStyle("bpe", ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), eos="<|im_end|>",
                            pad="<|endoftext|>", unk="<|endoftext|>", extra=("<|im_start|>",),
                            chat_template=CHATML_TEMPLATE, qwen2_split=True),
    "mistral": TokenizerStyle("bpe", ("<unk>", "<s>", "</s>"), eos="</s>", bos="<s>", unk="<unk>", add_bos=True),
    "gpt2": TokenizerStyle("bpe", ("<|endoftext|>",), eos="<|endoftext|>", bos="<|endoftext|>"),
    "gpt_neox": TokenizerStyle("bpe", ("<|endoftext|>", "<|padding|>"), eos="<|endoftext|>", bos="<|endoftext|>"),
    "gemma": TokenizerStyle("bpe", ("<pad>", "<eos>", "<bos>", "<unk>"), eos="<eos>", bos="<bos>", pad="<pad>",
                            unk="<unk>", add_bos=True),
    "t5": TokenizerStyle("unigram", ("<pad>", "</s>", "<unk>"), eos="</s>", pad="<pad>", unk="<unk>", add_eos=True),
}
ARCHS: tuple[str, ...] = tuple(STYLES)
DECODER_ARCHS: tuple[str, ...] = tuple(a for a in ARCHS if a != "t5")
#: the transformers class each arch is built with
MODEL_CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM",
                 "gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM", "gemma": "GemmaForCausalLM",
                 "t5": "T5ForConditionalGeneration"}


def check_arch(arch: str) -> str:
    """`arch`, or a FlanmixError naming the known ones."""
    if arch not in STYLES:
        raise FlanmixError(f"unknown architecture {arch!r}", field="arch", expected=" | ".join(ARCHS))
    return arch


def model_class(arch: str):
    """The transformers model class of `arch`."""
    import transformers

    return getattr(transformers, MODEL_CLASSES[check_arch(arch)])


def arch_config(arch: str, spec, vocab_size: int, ids: dict[str, int | None]):
    """The transformers config of `arch` at ladder rung `spec` (a `trainers.init_model.ModelSize`); `ids` holds the
    tokenizer's pad/bos/eos ids (None where it has none)."""
    import transformers

    pad, bos, eos = ids.get("pad"), ids.get("bos"), ids.get("eos")
    common = {"vocab_size": vocab_size, "pad_token_id": pad, "bos_token_id": bos, "eos_token_id": eos}
    decoder = {"hidden_size": spec.hidden, "intermediate_size": spec.intermediate, "num_hidden_layers": spec.layers,
               "num_attention_heads": spec.heads, "max_position_embeddings": spec.max_positions, **common}
    # GQA / MQA where the real family uses it (at least one KV head)
    kv_half = max(1, spec.heads // 2)
    if arch == "qwen2":
        return transformers.Qwen2Config(num_key_value_heads=kv_half, tie_word_embeddings=False, **decoder)
    if arch == "mistral":
        return transformers.MistralConfig(num_key_value_heads=kv_half, head_dim=spec.hidden // spec.heads,
                                          tie_word_embeddings=False, **decoder)
    if arch == "gemma":
        return transformers.GemmaConfig(num_key_value_heads=1, head_dim=spec.hidden // spec.heads,
                                        tie_word_embeddings=True, **decoder)
    if arch == "gpt_neox":
        return transformers.GPTNeoXConfig(tie_word_embeddings=False, use_parallel_residual=True, **decoder)
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=spec.hidden, n_layer=spec.layers, n_head=spec.heads,
                                       n_inner=spec.intermediate, n_positions=spec.max_positions,
                                       tie_word_embeddings=True, **common)
    if arch == "t5":
        return transformers.T5Config(
            d_model=spec.hidden, d_ff=spec.intermediate, d_kv=spec.head_dim or spec.hidden // spec.heads,
            num_heads=spec.heads, num_layers=spec.layers, num_decoder_layers=spec.layers,
            # T5 v1.1 / Flan-T5: an output layer of its own and no d_model^-0.5 scaling of the decoder output.
            # transformers 5 still ties the two at init (its T5Config forces tie_word_embeddings=True and keeps
            # only the scaling switch); `untie_t5_output` gives the output layer its own weights, and a checkpoint
            # holding two different tensors loads untied - exactly as a downloaded Flan-T5 does.
            feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0, is_encoder_decoder=True,
            decoder_start_token_id=pad, vocab_size=vocab_size, pad_token_id=pad, eos_token_id=eos,
        )
    raise FlanmixError(f"no config builder for {arch!r}", field="arch")  # llama is built by init_model.llama_config


def untie_t5_output(model, generator=None) -> None:
    """Give a freshly built T5's output layer its own weights, initialised as T5 v1.1 / Flan-T5 initialise their
    separate `lm_head` (normal, std d_model^-0.5, so a random model's logits keep a sane scale without the tied
    model's output scaling). transformers 5 ties them at init whatever the config says."""
    import torch

    head = model.lm_head
    if head.weight.data_ptr() != model.shared.weight.data_ptr():
        return
    weight = torch.empty_like(head.weight).normal_(0.0, model.config.d_model ** -0.5, generator=generator)
    head.weight = torch.nn.Parameter(weight)

"""Chat SFT: the loss mask of a conversation is the chat template's own assistant spans (`{% generation %}`), for
the tiny model's template and ChatML / Llama-3 style ones; ShareGPT and OpenAI files, `chat: true` on mixture rows,
the default template for a tokenizer without one, and the preference stages' use of the same rule."""

from __future__ import annotations

import copy
import json

import pytest

from flanmix.preferences import Group
from trainers.chat import DEFAULT_CHAT_TEMPLATE, sharegpt_messages
from trainers.data import IGNORE, chat_ids, read_rows, tokenize_rows
from trainers.models import load_tokenizer
from trainers.preference import encode_group
from trainers.sft import SFTConfig, SFTStage

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Reverse the words: red cat"},
    {"role": "assistant", "content": "cat red"},
    {"role": "user", "content": "Copy the words: blue dog"},
    {"role": "assistant", "content": "blue dog"},
]

# The tiny model's template (trainers.init_model.CHAT_TEMPLATE) with generation tags around what an assistant says.
TINY_TAGGED = (
    "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>' }}{{ '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{{ '\n' }}{% endif %}"
)
# Qwen2.5 / ChatML: the turn ends with <|im_end|> and a newline.
CHATML_TAGGED = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Llama 3: header tokens, a blank line, <|eot_id|> and no separator.
LLAMA3_TAGGED = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|eot_id|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def _with_template(tok, tagged: str, specials: tuple[str, ...] = (), eos: str | None = None):
    t = copy.deepcopy(tok)
    if specials:
        t.add_special_tokens({"additional_special_tokens": list(specials)})
    if eos:
        t.eos_token = eos
    t.chat_template = tagged
    return t


@pytest.mark.parametrize("name", ["tiny", "chatml", "chatml_eos_im_end", "llama3"])
def test_loss_mask_is_the_templates_assistant_spans(tok, name):
    t = {"tiny": lambda: _with_template(tok, TINY_TAGGED),
         "chatml": lambda: _with_template(tok, CHATML_TAGGED, ("<|im_start|>", "<|im_end|>")),
         "chatml_eos_im_end": lambda: _with_template(tok, CHATML_TAGGED, ("<|im_start|>", "<|im_end|>"),
                                                     eos="<|im_end|>"),
         "llama3": lambda: _with_template(tok, LLAMA3_TAGGED, ("<|start_header_id|>", "<|end_header_id|>",
                                                                "<|eot_id|>"))}[name]()
    ids, labels = chat_ids(t, CONVERSATION)
    ref = t.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert ids == list(ref["input_ids"])
    assert [int(lab != IGNORE) for lab in labels] == list(ref["assistant_masks"])
    trained = t.decode([x for x in labels if x != IGNORE])
    assert "cat red" in trained and "blue dog" in trained and "Reverse" not in trained and "brief" not in trained


def test_the_tiny_models_own_template_gives_the_same_mask(tok):
    tagged = _with_template(tok, TINY_TAGGED)
    assert tok.apply_chat_template(CONVERSATION, tokenize=False) == tagged.apply_chat_template(CONVERSATION,
                                                                                               tokenize=False)
    assert chat_ids(tok, CONVERSATION) == chat_ids(tagged, CONVERSATION)


def test_a_template_without_end_token_gets_eos(tok):
    t = copy.deepcopy(tok)
    t.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}" \
                      "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    ids, labels = chat_ids(t, CONVERSATION[1:3])
    trained = [x for x in labels if x != IGNORE]
    assert trained[-1] == t.eos_token_id and t.decode(trained[:-1]) == "cat red"


def test_sharegpt_openai_and_mixture_rows_tokenize_alike(tmp_path, tok):
    sharegpt = {"system": "Answer briefly.", "conversations": [
        {"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]} for m in CONVERSATION[1:]]}
    assert sharegpt_messages(sharegpt) == CONVERSATION
    (tmp_path / "sharegpt.json").write_text(json.dumps([sharegpt, sharegpt]))  # a JSON list, as such files are
    (tmp_path / "openai.jsonl").write_text(json.dumps({"messages": CONVERSATION}) + "\n")
    a, _ = tokenize_rows(tok, read_rows(tmp_path / "sharegpt.json"), max_length=256)
    b, _ = tokenize_rows(tok, read_rows(tmp_path / "openai.jsonl"), max_length=256)
    assert a[0] == b[0] == dict(zip(("input_ids", "labels"), chat_ids(tok, CONVERSATION)))
    # a mixture row (`flanmix build --messages`): inputs/targets by default, its messages with chat: true;
    # inputs/targets alone become a user and an assistant turn
    row = {"inputs": "Reverse the words: red cat", "targets": "cat red", "messages": CONVERSATION[1:3]}
    plain, _ = tokenize_rows(tok, [row], max_length=256)
    chat, _ = tokenize_rows(tok, [row], max_length=256, chat=True)
    bare, _ = tokenize_rows(tok, [{k: row[k] for k in ("inputs", "targets")}], max_length=256, chat=True)
    assert chat[0] == bare[0] == dict(zip(("input_ids", "labels"), chat_ids(tok, CONVERSATION[1:3])))
    assert plain[0] != chat[0]


def test_no_chat_template_uses_the_documented_default_and_keeps_it(tmp_path, tiny_model_dir):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.name != "chat_template.jinja":
            (model_dir / f.name).write_bytes(f.read_bytes())
    cfg_path = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": CONVERSATION[1:3]}) + "\n")
    stage = SFTStage(SFTConfig(model=str(model_dir), data=str(data), output_dir=str(tmp_path / "run")), verbose=False)
    assert stage.tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE  # saved with the trained model
    assert any("no chat template" in n for n in stage.notes)
    text = stage.tokenizer.decode(stage.items[0]["input_ids"])
    assert text.startswith("<|user|>\nReverse the words: red cat\n<|assistant|>\ncat red</s>")


def test_preference_stages_use_the_sft_rule(tok):
    """A preference pair whose prompt is a conversation gets the ids an SFT chat row has: prompt = the tokens
    before the assistant turn, chosen = the trained tokens."""
    prompt = CONVERSATION[:2]
    ids, labels = chat_ids(tok, prompt + [{"role": "assistant", "content": "cat red"}])
    first = next(i for i, x in enumerate(labels) if x != IGNORE)
    last = max(i for i, x in enumerate(labels) if x != IGNORE)
    for chosen in ("cat red", [{"role": "assistant", "content": "cat red"}]):
        g = encode_group(tok, Group(prompt, [chosen, "red cat"], [1.0, 0.0], None, None), 256)
        assert g.prompt_ids == ids[:first]
        assert g.responses_ids[0] == ids[first: last + 1]


@pytest.mark.parametrize("tagged", [TINY_TAGGED, LLAMA3_TAGGED, CHATML_TAGGED])
def test_chat_prompt_ids_carry_one_bos_whatever_the_template_writes(tok, tagged):
    """PPO and the preference stages feed conversational prompts through `prompt_ids`: a template that writes
    `{{ bos_token }}` itself must not get a second BOS from the tokenizer, and one that does not gets none; the ids
    equal the template's own tokenization of the generation prompt."""
    from trainers.data import prompt_ids

    t = _with_template(tok, tagged, ("<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>",
                                     "<|eot_id|>"))
    prompt = CONVERSATION[:2]
    ids = prompt_ids(t, prompt)
    ref = t.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids == list(ref)
    assert ids.count(t.bos_token_id) == (1 if "bos_token" in tagged else 0)

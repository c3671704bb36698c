"""Conversations through a chat template: which text of a rendered chat is an assistant turn (trained) and which is
not, for SFT rows and for preference prompts alike.

The rule. The text before assistant message i is the template's rendering of messages[:i] with the generation
prompt (exactly what a model is given at inference); the turn is what the rendering of messages[:i+1] adds to it,
up to and including the template's end-of-turn token (EOS, `<|im_end|>`, `<|eot_id|>`, `<end_of_turn>` ...). The
whitespace a template writes after that token is a separator, not something the model generates, so it is left
untrained (this matches the spans of a template's own `{% generation %}` tags). A template that ends a turn with no
special token gets EOS appended as an id, so the model still learns to stop.

Formats: OpenAI-style `messages` ([{"role", "content"}]) and ShareGPT `conversations` ([{"from", "value"}], with
an optional `system` field), whose roles human/gpt/observation/function_call map to user/assistant/tool/assistant.

A tokenizer without a chat template gets `DEFAULT_CHAT_TEMPLATE` (one turn is "<|role|>\\ncontent\\n"); the SFT
and preference stages store it in the trained model's tokenizer (`ensure_chat_template`), so inference renders
prompts the way training did.
"""

from __future__ import annotations

from typing import Any

from flanmix.core.errors import FlanmixError

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "observation": "tool", "function_call": "assistant", "tool": "tool"}


def has_chat_template(tokenizer) -> bool:
    """True if the tokenizer brings its own chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def ensure_chat_template(tokenizer) -> bool:
    """Give a tokenizer without a chat template the default one (so a saved model keeps the format it was trained
    with); returns True if it had to."""
    if has_chat_template(tokenizer):
        return False
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


def render_chat(tokenizer, messages: list[dict], *, generation_prompt: bool = False) -> str:
    """The text of `messages` through the tokenizer's chat template (the default one when it has none)."""
    template = tokenizer.chat_template if has_chat_template(tokenizer) else DEFAULT_CHAT_TEMPLATE
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt,
                                             chat_template=template)
    except Exception as err:  # jinja raises TemplateError, TypeError, ... e.g. on a role the template rejects
        raise FlanmixError(f"chat template failed: {str(err).splitlines()[0][:200]}", field="messages") from None


def special_texts(tokenizer) -> set[str]:
    """The text of every special token (EOS, end-of-turn markers, role tags added as special tokens)."""
    texts = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            texts.add(tok.content)
    return {t for t in texts if t}


def split_turn(tokenizer, turn: str, specials: set[str] | None = None) -> tuple[str, bool]:
    """(the trained text of a rendered assistant turn, whether EOS must be appended): the turn without the
    whitespace after its end token; EOS is appended when the template ends the turn with no special token."""
    text = turn.rstrip()
    specials = special_texts(tokenizer) if specials is None else specials
    return text, not any(text.endswith(s) for s in specials)


def check_messages(messages: Any) -> list[dict]:
    """`messages` as a list of {"role", "content"} dicts, or a FlanmixError naming the bad one."""
    if not isinstance(messages, list):
        raise FlanmixError("messages must be a list", field="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise FlanmixError(f"message {i} must be an object with role and content", field="messages")
    return messages


def sharegpt_messages(row: dict) -> list[dict]:
    """The messages of a ShareGPT row (`conversations` of {from, value}, optional `system`)."""
    conv = row.get("conversations")
    if not isinstance(conv, list):
        raise FlanmixError("conversations must be a list", field="conversations")
    out = [{"role": "system", "content": row["system"]}] if isinstance(row.get("system"), str) and row["system"] else []
    for i, m in enumerate(conv):
        if not isinstance(m, dict) or "from" not in m or "value" not in m:
            raise FlanmixError(f"turn {i} must be an object with from and value", field="conversations")
        out.append({"role": SHAREGPT_ROLES.get(m["from"], m["from"]), "content": m["value"]})
    return out


def chat_segments(tokenizer, messages: list[dict]) -> list[tuple[str, bool, bool]]:
    """Split a rendered chat into `(text, trained, eos)` segments covering the template's rendering of the whole
    conversation: assistant turns trained (`eos`: append the EOS id after it), everything else not (see the module
    docstring for the rule)."""
    messages = check_messages(messages)
    specials = special_texts(tokenizer)
    segments: list[tuple[str, bool, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], generation_prompt=True)
        upto = render_chat(tokenizer, messages[: i + 1])
        if not before.startswith(done) or not upto.startswith(before):
            raise FlanmixError("chat template rendering is not incremental; cannot locate assistant turns",
                               field="messages")
        text, eos = split_turn(tokenizer, upto[len(before):], specials)
        segments.append((before[len(done):], False, False))
        segments.append((text, True, eos))
        done = before + text
    full = render_chat(tokenizer, messages)
    if full.startswith(done) and len(full) > len(done):
        segments.append((full[len(done):], False, False))  # the separator after the last turn, later messages
    return segments


def response_turn(tokenizer, prompt: list[dict], response: Any) -> tuple[str, bool]:
    """(trained text, eos) of a response that follows a conversational `prompt`, by the same rule as an SFT
    assistant turn: the response (a string, or a list of messages) is rendered as the next assistant turn."""
    turn = check_messages(response) if isinstance(response, list) else [{"role": "assistant", "content": response}]
    before = render_chat(tokenizer, check_messages(prompt), generation_prompt=True)
    full = render_chat(tokenizer, list(prompt) + list(turn))
    if not full.startswith(before):
        raise FlanmixError("the chat template renders the prompt differently inside the conversation",
                           field="chat_template", expected="prompt render to be a prefix of the full render")
    return split_turn(tokenizer, full[len(before):])

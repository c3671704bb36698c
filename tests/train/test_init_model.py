"""init-model: tokenizer trained locally, random Llama saved as a normal transformers folder."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from flanmix.cli import main
from flanmix.core.errors import FlanmixError
from trainers.init_model import init_model, list_sizes


def test_tiny_model_dir_loads_with_auto_classes(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert model.config.vocab_size == len(tok)
    assert (tiny_model_dir / "model.safetensors").exists()
    ids = tok("What is 3 + 4?").input_ids
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "What is 3 + 4?"
    # byte-level: any text round-trips, including unseen characters
    text = "naïve 日本 \t\n  spaces"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<s><|user|>\nhi</s>\n<|assistant|>\n"
    n = sum(p.numel() for p in model.parameters())
    assert 100_000 < n < 600_000


def test_size_ladder_spans_half_million_to_hundred_million():
    rows = list_sizes()
    params = [r["params"] for r in rows]
    assert params == sorted(params)
    assert params[0] < 600_000 and params[-1] >= 100_000_000
    assert {"nano", "tiny", "base", "large"} <= {r["name"] for r in rows}


def test_init_model_cli(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"line {i} has words like alpha and beta" for i in range(200)))
    out = tmp_path / "m"
    rc = main(["init-model", "--size", "nano", "--out", str(out), "--vocab-size", "512", "--corpus", str(corpus)])
    assert rc == 0
    assert "params" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden_size"] == 64 and cfg["vocab_size"] <= 512
    # refuses to overwrite a non-empty folder, and names unknown sizes
    assert main(["init-model", "--size", "nano", "--out", str(out), "--corpus", str(corpus)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["init-model", "--size", "gigantic", "--out", str(tmp_path / "x"), "--corpus", str(corpus)]) == 2
    assert "gigantic" in capsys.readouterr().err
    assert main(["init-model", "--size", "nano"]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_list_sizes_cli(capsys):
    assert main(["init-model", "--list-sizes"]) == 0
    out = capsys.readouterr().out
    assert "large" in out and "nano" in out


def test_bad_vocab_size(tmp_path):
    with pytest.raises(FlanmixError, match="vocab"):
        init_model("nano", tmp_path / "m", vocab_size=10, texts=["abc"])

"""Encoder-decoder (T5 / Flan-T5 shapes): tokenizer, SFT loss == transformers' own, training, eval, DPO/RRHF, the
init-model ladder and T5 rungs in ablations."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from flanmix.cli import main
from flanmix.core.errors import FlanmixError
from flanmix.study import ablation
from flanmix.study.eval import EvalOptions, build_eval_sets, evaluate
from helpers import write_prefs
from trainers import seq2seq
from trainers.dpo import DPOConfig, DPOStage
from trainers.dpo import build_stage as build_dpo
from trainers.dpo import train as train_dpo
from trainers.init_model import T5_SIZES, init_model, list_sizes
from trainers.models import load_model_and_tokenizer
from trainers.rrhf import train as train_rrhf
from trainers.sft import SFTConfig, SFTStage, train

ROWS = [{"inputs": f"What is {i} + {2 * i}?", "targets": str(3 * i)} for i in range(12)]


@pytest.fixture(scope="module")
def t5(arch_model_dir):
    return arch_model_dir("t5")


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("t5rows") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_tokenizer_has_t5_special_tokens(t5, tmp_path):
    tok = AutoTokenizer.from_pretrained(t5)
    assert [tok.convert_ids_to_tokens(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token_id) == (0, 1, 2, None)
    assert tok("What is 3 + 4?")["input_ids"][-1] == 1 and tok.decode(tok("cat dog")["input_ids"],
                                                                      skip_special_tokens=True) == "cat dog"
    cfg = json.loads((t5 / "config.json").read_text())
    assert (cfg["model_type"], cfg["decoder_start_token_id"], cfg["feed_forward_proj"]) == ("t5", 0, "gated-gelu")
    info = init_model("nano", tmp_path / "s", arch="t5", vocab_size=300, texts=["alpha beta gamma"] * 50, extra_ids=3)
    tok = AutoTokenizer.from_pretrained(tmp_path / "s")
    assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1 == info["vocab_size"] - 1
    assert tok.convert_tokens_to_ids("<extra_id_2>") == len(tok) - 3


def test_rungs_are_untied_and_unscaled_like_flan_t5(t5):
    """Flan-T5 (T5 v1.1) has an output layer of its own and does not scale the decoder output by d_model^-0.5; a
    saved rung loads that way in plain transformers, and its logits are lm_head(decoder output) with no scaling."""
    import torch
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(t5)
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    assert not torch.equal(model.lm_head.weight, model.shared.weight)
    assert model.config.scale_decoder_outputs is False
    ids = torch.tensor([[5, 6, 7, 1]])
    out = model(input_ids=ids, decoder_input_ids=torch.tensor([[0, 5]]), output_hidden_states=True)
    assert torch.allclose(out.logits, model.lm_head(out.decoder_hidden_states[-1]), atol=1e-6)
    std = model.lm_head.weight.std().item() * model.config.d_model ** 0.5
    assert 0.9 < std < 1.1  # initialised with std d_model^-0.5 (T5 v1.1's separate output layer)


def test_sft_loss_equals_transformers_t5_loss_with_labels(t5, rows_file, tmp_path):
    stage = SFTStage(SFTConfig(model=str(t5), data=str(rows_file), output_dir=str(tmp_path)), verbose=False)
    assert stage.seq2seq and not stage.packing
    batch = stage.collate(stage.train_dataset()[:8])
    enc, dec = batch["attention_mask"].sum(-1), (batch["labels"] != -100).sum(-1)
    assert len(set(enc.tolist())) > 1 and len(set(dec.tolist())) > 1, "padding on both sides"
    model = stage.model.eval()
    ours, _ = stage.loss(model, batch)
    theirs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)  # float32 sums in another order: ~2e-7 apart
    # the tokenization rule: prompt + </s> to the encoder, the target (no delimiter) + EOS to the decoder
    tok = stage.tokenizer
    ex = stage.train_dataset()[0]
    assert ex["input_ids"] == tok(ROWS[0]["inputs"])["input_ids"]
    assert ex["labels"] == tok(ROWS[0]["targets"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_truncation_keeps_the_encoder_eos_and_chat_rows_are_refused(t5):
    _, tok = load_model_and_tokenizer(t5)
    long = [{"inputs": "cat dog " * 40, "targets": "fox " * 40}]
    ex, st = seq2seq.tokenize_rows(tok, long, max_length=16)
    assert st.truncated == 1 and len(ex[0]["input_ids"]) == 16 and ex[0]["input_ids"][-1] == tok.eos_token_id
    assert len(ex[0]["labels"]) == 16
    with pytest.raises(FlanmixError, match="dropped"):
        seq2seq.tokenize_rows(tok, long, max_length=16, truncation="drop")
    with pytest.raises(FlanmixError, match="need a decoder-only model"):
        seq2seq.tokenize_rows(tok, [{"messages": [{"role": "user", "content": "hi"}]}], max_length=16)


def test_sft_trains_and_saves_a_seq2seq_folder(t5, rows_file, tmp_path):
    result = train({"model": str(t5), "data": str(rows_file), "output_dir": str(tmp_path), "max_steps": 12,
                    "batch_size": 4, "lr": 1e-2, "log_every": 1, "progress": False, "tensorboard": False,
                    "threads": 1})
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    model = AutoModelForSeq2SeqLM.from_pretrained(result.final_dir)
    assert model.config.model_type == "t5"


def test_rank_scores_and_greedy_answers_match_transformers(t5):
    from flanmix.study.eval.scorer import ModelScorer

    model, tok = load_model_and_tokenizer(t5)
    scorer = ModelScorer(model, tok)
    prompts, options = ["What is 3 + 4?", "Reverse the words: cat dog"], [[" 7", " 12"], [" dog cat", " cat"]]
    for p, opts, scores in zip(prompts, options, scorer.rank(prompts, options)):
        for o, (lp, n) in zip(opts, scores):
            labels = torch.tensor([seq2seq.target_ids(tok, o)])
            with torch.no_grad():
                loss = model(input_ids=torch.tensor([tok(p)["input_ids"]]), labels=labels).loss
            assert n == labels.shape[1] and lp == pytest.approx(-loss.item() * n, abs=1e-4)
    enc = tok(prompts, return_tensors="pt", padding=True)
    hf = model.generate(**enc, max_new_tokens=5, do_sample=False, num_beams=1)
    assert scorer.generate(prompts, max_new_tokens=5, stop=[[], []]) == tok.batch_decode(hf, skip_special_tokens=True)


def test_memorising_the_eval_rows_through_sft_scores_one(tmp_path):
    """As for the decoder-only path: SFT on the very eval rows must make eval read 1.0, which it only does if eval
    feeds the encoder and scores the decoder exactly as training does."""
    sets = build_eval_sets(["arith_add", "cls_parity"], EvalOptions(limit=4, metrics=["exact_match",
                                                                                      "rank_classification"]))
    rows = [{"inputs": it.prompt, "targets": it.reference} for s in sets for it in s.items]
    texts = [t for r in rows for t in (r["inputs"], r["targets"])] + [o for s in sets for it in s.items
                                                                      for o in it.options or []]
    init_model("nano", tmp_path / "m", arch="t5", vocab_size=400, texts=texts * 4)
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    result = train({"model": str(tmp_path / "m"), "data": str(data), "output_dir": str(tmp_path / "run"),
                    "max_steps": 80, "lr": 1e-2, "batch_size": 8, "warmup_steps": 5, "progress": False,
                    "tensorboard": False, "threads": 1})
    report = evaluate(result.final_dir, sets)
    for name, task in report["tasks"].items():
        assert task["metrics"]["exact_match_strict"] == 1.0, (name, task["samples"])
        assert task["metrics"]["rank_classification"] == 1.0, name


def test_dpo_and_rrhf_on_the_decoder(t5, tmp_path):
    prefs = write_prefs(tmp_path / "p.jsonl", n=24)
    stage = build_dpo(DPOConfig(model=str(t5), data=str(prefs), output_dir=str(tmp_path / "x")))
    copy = DPOStage(stage.model, stage.tokenizer, stage.train_groups, reference="copy")
    batch = stage.collate(stage.train_groups[:6])
    assert "tok_row" not in batch, "encoder-decoder groups are never prefix-shared"
    with torch.no_grad():
        (a, _), (b, _) = stage.loss(stage.model, batch), copy.loss(copy.model, copy.collate(stage.train_groups[:6]))
    assert a.item() == pytest.approx(math.log(2), abs=1e-6) and b.item() == pytest.approx(a.item(), abs=1e-6)
    common = {"data": str(prefs), "max_steps": 4, "batch_size": 4, "log_every": 1, "progress": False,
              "tensorboard": False, "threads": 1, "lr": 3e-3}
    res = train_dpo({**common, "model": str(t5), "output_dir": str(tmp_path / "dpo")})
    losses = [h["loss"] for h in res.history if "loss" in h]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4) and losses[-1] < losses[0]
    assert AutoModelForSeq2SeqLM.from_pretrained(res.final_dir).config.model_type == "t5"
    res = train_rrhf({**common, "model": res.final_dir, "output_dir": str(tmp_path / "rrhf")})
    assert all(math.isfinite(h["loss"]) for h in res.history if "loss" in h)


def test_init_model_cli_and_the_t5_ladder(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"line {i} alpha beta gamma" for i in range(300)))
    out = tmp_path / "m"
    assert main(["init-model", "--arch", "t5", "--size", "nano", "--out", str(out), "--vocab-size", "300",
                 "--corpus", str(corpus)]) == 0
    assert "nano t5 model" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["model_type"] == "t5"
    assert main(["init-model", "--arch", "bart", "--out", str(tmp_path / "b")]) == 2
    assert "unknown architecture 'bart'" in capsys.readouterr().err
    small = T5_SIZES["small"]  # Flan-T5-small's shape
    assert (small.hidden, small.intermediate, small.heads, small.head_dim, small.layers) == (512, 1024, 6, 64, 8)
    params = {r["name"]: r["params"] for r in list_sizes(32128, "t5")}
    assert list(params) == ["nano", "tiny", "mini", "small", "base", "medium", "large"]
    # Flan-T5's own parameter counts (small 76.96M, base 247.58M, large 783.15M), untied output layer included
    for name, flan in (("small", 76_961_152), ("base", 247_577_856), ("large", 783_150_080)):
        assert params[name] == flan


def test_ablation_models_take_t5_rungs_and_folders(t5, tmp_path):
    spec = {"held_out": {"clusters": ["logic"]}, "task_counts": [1], "seeds": [0], "baseline": True,
            "models": ["nano", "t5:nano", {"path": str(t5), "name": "my-t5"}],
            "budget": {"steps": 2, "batch_size": 2, "max_length": 128}, "train": {"lr": 1e-3}}
    path = tmp_path / "a.yaml"
    path.write_text(json.dumps(spec))
    parsed, _ = ablation.load_spec(path)
    assert [(m.name, m.size, m.arch) for m in parsed.models[:2]] == [("nano", "nano", "llama"),
                                                                       ("t5-nano", "nano", "t5")]
    res = ablation.run(path, tmp_path / "out", runner=lambda cell, ctx: {"heldout_score": 0.5}, prepare=False)
    facts = {(r["model"], r["count"]): (r["model_type"], r["lora"]) for r in res["rows"]}
    assert facts[("t5-nano", 1)] == ("t5", False) and facts[("my-t5", 1)] == ("t5", False)
    assert facts[("nano", 0)] == ("llama", False)
    bad = {**spec, "models": [{"path": str(t5), "arch": "t5", "name": "x"}]}
    path.write_text(json.dumps(bad))
    with pytest.raises(FlanmixError, match="architecture comes from its config.json"):
        ablation.load_spec(path)


def test_rrhf_candidates_sampled_from_a_t5_policy(t5):
    from trainers.rrhf import sample_candidates

    model, tok = load_model_and_tokenizer(t5)
    prompts = ["Reverse the words: cat dog", "What is 3 + 4?"]
    out = sample_candidates(model, tok, prompts, k=3, max_new_tokens=4, seed=0)
    assert [len(c) for c in out] == [3, 3]
    assert all(isinstance(c, str) and "Reverse the words" not in c for cs in out for c in cs)  # decoder tokens only

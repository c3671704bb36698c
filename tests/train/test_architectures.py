"""Every stage on tiny random models of real architectures (built offline from their configs, with locally trained
tokenizers that have each family's quirks): loading, SFT, packing, eval, DPO/RRHF, reward scoring and PPO."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from flanmix.cli import main
from flanmix.core.errors import FlanmixError
from flanmix.preferences import preference_rows, row_to_group
from flanmix.study.eval.scorer import ModelScorer
from helpers import reverse_examples, write_prefs
from trainers.archs import ARCHS, DECODER_ARCHS
from trainers.data import IGNORE
from trainers.dpo import DPOConfig
from trainers.dpo import build_stage as build_dpo
from trainers.logprobs import batch_sequence_logprobs
from trainers.models import CAUSAL, SEQ2SEQ, load_model, load_model_and_tokenizer, model_kind
from trainers.packing import keeps_documents_apart
from trainers.ppo import PPOConfig
from trainers.ppo import train as ppo_train
from trainers.preference import collate, collate_shared, encode_groups
from trainers.rewards import new_reward_model, reward_scores
from trainers.rrhf import RRHFConfig
from trainers.rrhf import build_stage as build_rrhf
from trainers.sft import SFTConfig, SFTStage

# (adds BOS, has its own pad token, tied embeddings) of each family, as built by `init-model --arch`
QUIRKS = {"llama": (True, True, True), "qwen2": (False, True, False), "mistral": (True, False, False),
          "gpt2": (False, False, True), "gpt_neox": (False, False, False), "gemma": (True, True, True),
          "t5": (False, True, False)}
ROWS = [{"inputs": f"What is {i} + {i * 7}?", "targets": str(i * 8) + " yes" * (i % 3)} for i in range(10)]


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch_data") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    return write_prefs(tmp_path_factory.mktemp("arch_prefs") / "pairs.jsonl", n=12)


def _sft(arch_model_dir, arch, data, tmp_path, **kw):
    cfg = SFTConfig(model=str(arch_model_dir(arch)), data=str(data), output_dir=str(tmp_path), **kw)
    return SFTStage(cfg, verbose=False)


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_with_the_family_quirks(arch_model_dir, arch):
    path = arch_model_dir(arch)
    model, tok = load_model_and_tokenizer(path)
    adds_bos, own_pad, tied = QUIRKS[arch]
    assert model_kind(path) == (SEQ2SEQ if arch == "t5" else CAUSAL)
    assert model.config.model_type == arch and len(tok) <= model.get_input_embeddings().num_embeddings
    ids = tok("What is 3 + 4?")["input_ids"]
    assert (ids[0] == tok.bos_token_id) == adds_bos
    assert (ids[-1] == tok.eos_token_id) == (arch == "t5")  # T5 ends its encoder inputs with </s>
    assert tok.pad_token_id is not None and (tok.pad_token_id == tok.eos_token_id) == (not own_pad)
    out = model.get_output_embeddings().weight
    assert (out.data_ptr() == model.get_input_embeddings().weight.data_ptr()) == tied
    assert tok.padding_side == "right"


@pytest.mark.parametrize("arch", ARCHS)
def test_sft_loss_is_finite_and_falls_on_a_repeated_batch(arch_model_dir, arch, sft_data, tmp_path):
    stage = _sft(arch_model_dir, arch, sft_data, tmp_path)
    batch = stage.collate(stage.train_dataset()[:6])
    assert stage.count(batch) == int((batch["labels"] != IGNORE).sum()) > 0
    opt = torch.optim.AdamW(stage.model.parameters(), lr=3e-3)
    stage.model.train()
    losses = []
    for _ in range(6):
        loss, _ = stage.loss(stage.model, batch)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_packed_loss_equals_unpacked(arch_model_dir, arch, sft_data, tmp_path):
    plain = _sft(arch_model_dir, arch, sft_data, tmp_path, max_length=64)
    packed = _sft(arch_model_dir, arch, sft_data, tmp_path, max_length=64, packing=True)
    assert packed.packing and packed.packing_mask == "position_ids" and not packed.notes
    assert len(packed.items) < len(plain.items)
    model = plain.model.eval()
    with torch.no_grad():
        a, _ = plain.loss(model, plain.collate(plain.items))
        b, _ = packed.loss(model, packed.collate(packed.items))
    assert a.item() == pytest.approx(b.item(), abs=1e-5)


def test_a_model_that_mixes_packed_documents_trains_unpacked(arch_model_dir, sft_data, tmp_path):
    class IgnoresPositions(torch.nn.Module):  # attention that cannot see document boundaries
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def forward(self, input_ids, position_ids=None, attention_mask=None, **kw):
            return self.inner(input_ids=input_ids, **kw)

    model, tok = load_model_and_tokenizer(arch_model_dir("gpt2"))
    wrapped = IgnoresPositions(model)
    assert keeps_documents_apart(model) and not keeps_documents_apart(wrapped)
    cfg = SFTConfig(model="unused", data=str(sft_data), output_dir=str(tmp_path), packing=True)
    stage = SFTStage(cfg, model=wrapped, tokenizer=tok, verbose=False)
    assert not stage.packing and "unpacked" in stage.notes[0]
    t5 = _sft(arch_model_dir, "t5", sft_data, tmp_path, packing=True)
    assert not t5.packing and "encoder-decoder" in t5.notes[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_batched_equals_alone(arch_model_dir, arch):
    model, tok = load_model_and_tokenizer(arch_model_dir(arch))
    scorer = ModelScorer(model, tok, batch_size=4)
    prompts = ["What is 3 + 4?", "Reverse the words: red cat dog fox blue", "Copy: a"]
    options = [[" 7", " 12", " 70"], [" fox dog cat red", " red"], [" a", " b b"]]
    gen = scorer.generate(prompts, max_new_tokens=6, stop=[["\n"]] * 3)
    ranks = scorer.rank(prompts, options)
    for i, p in enumerate(prompts):
        assert scorer.generate([p], max_new_tokens=6, stop=[["\n"]]) == [gen[i]]
        alone = scorer.rank([p], [options[i]])[0]
        assert [n for _, n in alone] == [n for _, n in ranks[i]]
        assert [lp for lp, _ in alone] == pytest.approx([lp for lp, _ in ranks[i]], abs=1e-4)
        assert all(math.isfinite(lp) and lp < 0 for lp, _ in ranks[i])


@pytest.mark.parametrize("arch", ARCHS)
def test_dpo_starts_at_ln2_and_rrhf_runs(arch_model_dir, arch, prefs, tmp_path):
    path = str(arch_model_dir(arch))
    dpo = build_dpo(DPOConfig(model=path, data=str(prefs), output_dir=str(tmp_path / "dpo"), eval_fraction=0.25))
    batch = dpo.collate(dpo.train_groups[:4])
    with torch.no_grad():
        loss, metrics = dpo.loss(dpo.model, batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    assert 0 <= dpo.evaluate(None)["eval_preference_accuracy"] <= 1
    rrhf = build_rrhf(RRHFConfig(model=path, data=str(prefs), output_dir=str(tmp_path / "rrhf")))
    loss, metrics = rrhf.loss(rrhf.model, rrhf.collate(rrhf.train_groups[:4]))
    assert torch.isfinite(loss) and metrics["sft_loss"] > 0
    loss.backward()


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_shared_batches_give_the_padded_logprobs(arch_model_dir, arch):
    model, tok = load_model_and_tokenizer(arch_model_dir(arch))
    rows = preference_rows(reverse_examples(4), kind="rankings", seed=0, k=3)
    groups = encode_groups(tok, [row_to_group(r) for r in rows], 64, encoder_decoder=arch == "t5")
    with torch.no_grad():
        padded = batch_sequence_logprobs(model.eval(), collate(groups, tok.pad_token_id))
        shared = batch_sequence_logprobs(model, collate_shared(groups, tok.pad_token_id))
    assert torch.allclose(padded, shared, atol=1e-4)


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_reward_is_read_at_the_last_token_with_left_or_right_padding(arch_model_dir, arch):
    path = arch_model_dir(arch)
    model = new_reward_model(path).eval()
    seqs = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]
    pad = 0
    width = max(len(s) for s in seqs)
    right = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    left = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
    r_mask, l_mask = (torch.arange(width) < torch.tensor([[len(s)] for s in seqs])).long(), None
    l_mask = r_mask.flip(-1)
    with torch.no_grad():
        alone = torch.cat([reward_scores(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))
                           for s in seqs])
        assert torch.allclose(reward_scores(model, right, r_mask), alone, atol=1e-5)
        assert torch.allclose(reward_scores(model, left, l_mask), alone, atol=1e-5)


def _short_answers(prompts, completions):
    return [-abs(len(c) - 4) / 4 for c in completions]


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_ppo_runs(arch_model_dir, arch, prefs, tmp_path):
    cfg = PPOConfig(model=str(arch_model_dir(arch)), data=str(prefs), output_dir=str(tmp_path), max_steps=2,
                    rollout_batch_size=4, mini_batch_size=4, ppo_epochs=1, max_new_tokens=3, log_every=1,
                    progress=False, tensorboard=False, save_final=False, threads=1)
    result = ppo_train(cfg, reward_fn=_short_answers)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def test_sdpa_request_on_a_class_without_sdpa_falls_back_to_eager(arch_model_dir, monkeypatch, capsys):
    from transformers import GPT2LMHeadModel

    monkeypatch.setattr(GPT2LMHeadModel, "_supports_sdpa", False)
    model = load_model(arch_model_dir("gpt2"), attn_implementation="sdpa")
    assert model.config._attn_implementation == "eager"
    assert "using eager" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ bad input

def _sft_yaml(tmp_path, model, data, **extra):
    cfg = {"model": str(model), "data": str(data), "output_dir": str(tmp_path / "out"), "max_steps": 1,
           "progress": False, "tensorboard": False, **extra}
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_unknown_architecture_is_one_line(arch_model_dir, sft_data, tmp_path, capsys):
    folder = tmp_path / "alien"
    shutil.copytree(arch_model_dir("llama"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "frobnicator"}))
    assert main(["train", "sft", "--config", str(_sft_yaml(tmp_path, folder, sft_data))]) == 2
    err = _one_line_error(capsys)
    assert "frobnicator" in err and "alien" in err and "unknown architecture" in err
    with pytest.raises(FlanmixError, match="no causal-LM or seq2seq-LM class"):
        (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "vit"}))
        model_kind(folder)


def test_a_tokenizer_larger_than_the_embeddings_is_one_line(arch_model_dir, sft_data, tmp_path, capsys):
    from trainers.init_model import train_tokenizer

    big = tmp_path / "big_tok"
    train_tokenizer([f"word{i} token{i} alpha{i}" for i in range(3000)], 1024).save_pretrained(big)
    yaml = _sft_yaml(tmp_path, arch_model_dir("llama"), sft_data, tokenizer=str(big))
    assert main(["train", "sft", "--config", str(yaml)]) == 2
    assert "model embeds only 512" in _one_line_error(capsys)


@pytest.mark.parametrize("stage", ["rm", "ppo"])
def test_rm_and_ppo_refuse_an_encoder_decoder(arch_model_dir, prefs, tmp_path, capsys, stage):
    cfg = {"model": str(arch_model_dir("t5")), "data": str(prefs), "output_dir": str(tmp_path / "o")}
    if stage == "ppo":
        cfg.update(reward_fn="helpers:nothing", max_steps=1)
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))
    assert main(["train", stage, "--config", str(path)]) == 2
    err = _one_line_error(capsys)
    assert f"the {stage} stage trains decoder-only models" in err and "t5 is an encoder-decoder" in err

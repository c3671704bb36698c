"""Shared test set-up: offline hub, paths to the repo and to the shared real data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# torch's intra-op threads spin-wait: on 2 shared cores (and under `-n 2`) two threads per process made tiny
# models ~20x slower (measured: 7 ms instead of 0.2 ms per small linear). One thread per test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"shared data missing at {SHARED_DATA}"
    return SHARED_DATA


# --- model fixtures ---

def synthetic_texts(n: int = 2000, seed: int = 0) -> list[str]:
    """Small deterministic task-like corpus for training test tokenizers (no bundled data needed)."""
    rng = random.Random(seed)
    words = ("alpha beta gamma delta red green blue cat dog fox sort reverse copy list word answer question "
             "the a of to is what which yes no true false first last number letter sentence").split()
    texts = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        ws = " ".join(rng.choice(words) for _ in range(rng.randint(3, 10)))
        texts.append(f"Question: What is {a} + {b}?\nAnswer: {a + b}")
        texts.append(f"Reverse the words: {ws}\n{' '.join(reversed(ws.split()))}")
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random ≈0.25M-parameter Llama (hidden 64, 2 layers) + byte-level BPE tokenizer (pad/bos/eos, chat template),
    built once per session. Treat it as read-only: copy it if a test needs to change it."""
    from trainers.init_model import init_model  # here, not at the top: data-side tests do not need the trainers

    out = tmp_path_factory.mktemp("models") / "nano"
    init_model("nano", out, vocab_size=2048, texts=synthetic_texts(), seed=0)
    return out


@pytest.fixture(scope="session")
def ray_cluster():
    """A local 2-CPU Ray cluster, started once per test session (per xdist worker) and shut down at its end; tests
    using it skip where Ray is not installed. `--engine ray` code in the test process uses this open session."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def arch_model_dir(tmp_path_factory):
    """`arch_model_dir(arch)`: a random nano model (hidden 64, 2 layers, vocab 512) of an `init-model --arch`
    architecture (llama, qwen2, mistral, gpt2, gpt_neox, gemma, t5) with its locally trained tokenizer, built on
    first use and shared by the whole session. Treat the folders as read-only."""
    from trainers.init_model import init_model

    root = tmp_path_factory.mktemp("archs")
    texts = synthetic_texts(600)
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            init_model("nano", root / arch, arch=arch, vocab_size=512, texts=texts, seed=0)
            made[arch] = root / arch
        return made[arch]

    return get

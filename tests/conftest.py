"""Shared fixtures: tiny configs that run in milliseconds, and the offline environment the tests need."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Offline by default: nothing may reach the Hub. (GPT-2's BPE files ship with the project: tiktoken needs no cache.)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tokenizer files that save_gpt2_tokenizer caches go to a folder of this test session, not the user's cache.
os.environ["GPT2EDU_CACHE"] = tempfile.mkdtemp(prefix="gpt2edu-test-cache-")
atexit.register(shutil.rmtree, os.environ["GPT2EDU_CACHE"], ignore_errors=True)
sys.path.insert(0, str(ROOT))

from configuration_gpt2edu import GPT2EduConfig  # noqa: E402


def tiny_config(**overrides) -> GPT2EduConfig:
    """A 2-layer, 32-wide GPT-2 with a small vocabulary; overrides replace any field."""
    values = dict(
        vocab_size=101,
        context_length=64,
        emb_dim=32,
        n_heads=4,
        n_layers=2,
        drop_rate=0.0,
        bos_token_id=100,
        eos_token_id=100,
    )
    values.update(overrides)
    return GPT2EduConfig(**values)


@pytest.fixture
def make_config():
    return tiny_config


@pytest.fixture(scope="session")
def tokenizer():
    """GPT-2's tokenizer, built once (from the BPE files that ship with the project)."""
    from tokenization_gpt2edu import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory, tokenizer):
    """A tiny model with GPT-2's real vocabulary, saved with its tokenizer, as every program of ours saves it."""
    import torch

    from modeling_gpt2edu import GPT2EduForCausalLM

    torch.manual_seed(0)
    model = GPT2EduForCausalLM(tiny_config(vocab_size=50257, bos_token_id=50256, eos_token_id=50256)).eval()
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, folder

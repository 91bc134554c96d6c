"""Shared fixtures: tiny configs that run in milliseconds, and the offline environment the tests need."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Offline by default: tiktoken reads GPT-2's BPE files from ../shared, and nothing may reach the Hub.
if (SHARED / "tiktoken-cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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

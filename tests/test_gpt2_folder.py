"""`convert_checkpoint.py SRC OUT --to gpt2` folders read by tools built for OpenAI's own GPT-2 folders.

Such tools (llama.cpp's convert_hf_to_gguf.py, optimum, anything pinned to transformers 4.x) read config.json's fields
by OpenAI's names and load the tokenizer with AutoTokenizer. The folder carries what `openai-community/gpt2` carries:
its config fields (`n_ctx` among them) and its tokenizer files (vocab.json, merges.txt, tokenizer.json, and a
tokenizer class transformers 4.x knows). llama.cpp's converter itself runs on these folders in test_gguf.py.

transformers 4.57 is checked in an environment of its own, made with pip once and cached (`$GPT2EDU_TEST_CACHE`,
default `~/.cache/gpt2edu-tests`): transformers and tokenizers only, no torch (4.x loads configs and tokenizers
without it). Skipped, saying why, where the registry cannot be reached.
"""

import dataclasses
import json
import os
import subprocess
import venv
from pathlib import Path

import pytest
import torch
from conftest import SHARED
from seed_reference import SeedConfig, seed_model
from test_tokenizer import TEXTS
from transformers import AutoTokenizer

from convert_checkpoint import main
from tokenization_gpt2edu import BPE_FOLDER, tiktoken_encoding

# openai-community/gpt2's config.json, less `task_specific_params` (its pipeline's sampling settings, which a converted
# model does not carry: it generates as its generation_config.json says). Sizes are GPT-2 124M's.
OPENAI_CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "vocab_size": 50257,
}
SIZES = {"n_ctx": 64, "n_positions": 64, "n_embd": 64, "n_head": 4, "n_layer": 2}  # the test model's

TRANSFORMERS_4 = "transformers==4.57.*"
# Runs in the transformers 4.57 environment, with nothing of this project: the folder's config and tokenizer.
READ_WITH_TRANSFORMERS_4 = """
import json, sys
import transformers
from transformers import AutoConfig, AutoTokenizer
folder, texts = sys.argv[1], json.loads(sys.argv[2])
config = AutoConfig.from_pretrained(folder)
tokenizer = AutoTokenizer.from_pretrained(folder)
ids = [tokenizer.encode(text) for text in texts]
print(json.dumps({
    "version": transformers.__version__,
    "config": [type(config).__name__, config.n_ctx, config.n_positions, config.n_embd, config.n_layer],
    "tokenizer": type(tokenizer).__name__,
    "ids": ids,
    "decoded": [tokenizer.decode(token_ids) for token_ids in ids],
    "eos": [tokenizer.eos_token, tokenizer.eos_token_id],
    "model_max_length": tokenizer.model_max_length,
}))
"""


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    """A tiny seed model (GPT-2's vocabulary and dropout), converted with --to gpt2."""
    root = tmp_path_factory.mktemp("gpt2-folder")
    config = SeedConfig(vocab_size=50257, context_length=64, emb_dim=64, n_heads=4, drop_rate=0.1, qkv_bias=True)
    torch.save(seed_model(**dataclasses.asdict(config)).state_dict(), root / "model.pth")
    (root / "model.config.json").write_text(json.dumps(dataclasses.asdict(config)))
    assert main([str(root / "model.pth"), str(root / "gpt2"), "--to", "gpt2"]) == 0
    return root / "gpt2"


def test_config_carries_what_openais_gpt2_config_carries(gpt2_folder):
    config = json.loads((gpt2_folder / "config.json").read_text())
    assert {name: config.get(name) for name in OPENAI_CONFIG} == OPENAI_CONFIG | SIZES


def test_tokenizer_files_are_the_ones_openai_community_gpt2_ships(gpt2_folder):
    assert (gpt2_folder / "vocab.json").read_bytes() == (BPE_FOLDER / "encoder.json").read_bytes()
    assert (gpt2_folder / "merges.txt").read_bytes() == (BPE_FOLDER / "vocab.bpe").read_bytes()
    tokenizer_json = json.loads((gpt2_folder / "tokenizer.json").read_text())
    assert len(tokenizer_json["model"]["merges"]) == 50000  # OpenAI's merges, as its tokenizer.json has them
    assert tokenizer_json["post_processor"]["type"] == "ByteLevel"  # adds no BOS or EOS token
    config = json.loads((gpt2_folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "GPT2Tokenizer" and config["model_max_length"] == 64


def test_tokenizer_gives_tiktokens_ids(gpt2_folder):
    tokenizer, encoding = AutoTokenizer.from_pretrained(gpt2_folder), tiktoken_encoding()
    texts = list(TEXTS.values())
    assert [tokenizer.encode(text) for text in texts] == [encoding.encode(t, allowed_special="all") for t in texts]
    assert [tokenizer.decode(tokenizer.encode(text)) for text in texts] == texts
    paragraphs = (SHARED / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8").split("\n\n")
    assert tokenizer(paragraphs)["input_ids"] == encoding.encode_ordinary_batch(paragraphs)
    assert (tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token) == (50256, 50256, None)


@pytest.fixture(scope="module")
def transformers_4_python() -> Path:
    """A Python with transformers 4.57 and nothing else of ours, made once and cached."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt2edu-tests"
    folder = Path(os.environ.get("GPT2EDU_TEST_CACHE") or default) / "transformers-4.57-env"
    python = folder / "bin" / "python"
    if not (folder / "complete").is_file():
        venv.create(folder, clear=True, with_pip=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", TRANSFORMERS_4], capture_output=True, text=True
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"pip could not install {TRANSFORMERS_4} in a separate environment: {last}")
        (folder / "complete").touch()
    return python


def test_folder_loads_under_transformers_4(gpt2_folder, transformers_4_python):
    texts = list(TEXTS.values())
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [str(transformers_4_python), "-c", READ_WITH_TRANSFORMERS_4, str(gpt2_folder), json.dumps(texts)],
        capture_output=True,
        text=True,
        env=env,
        cwd=gpt2_folder.parent,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["version"].startswith("4.57.")
    assert loaded["config"] == ["GPT2Config", 64, 64, 64, 2]
    assert loaded["tokenizer"] == "GPT2TokenizerFast"
    encoding = tiktoken_encoding()
    assert loaded["ids"] == [encoding.encode(text, allowed_special="all") for text in texts]
    assert loaded["decoded"] == texts
    assert loaded["eos"] == ["<|endoftext|>", 50256] and loaded["model_max_length"] == 64

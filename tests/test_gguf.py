"""GGUF files (`convert_checkpoint.py SRC OUT.gguf`): what llama.cpp's own converter writes, and bad input refused.

The reference is llama.cpp's `convert_hf_to_gguf.py`, taken from llama-cpp-python's sdist (tests/llama_cpp_sources.py;
skipped, saying why, where the registry cannot be reached), run on the `--to gpt2` folder of the same model: the same
run checks that our GPT-2 folders are ones llama.cpp's converter reads. It runs as a subprocess of this environment
(torch, numpy, and transformers 5: llama.cpp's requirements pin transformers 4.57.6, but its GPT-2 path only uses
config.json and AutoTokenizer, which work the same under 5) with the gguf-py of its own llama.cpp commit, which the
script puts first on sys.path itself.

Both files are read with gguf's GGUFReader and compared: every tensor (name, GGML type, shape, bytes) and every
metadata key with its value and type, except the informational ones llama.cpp's converter derives from the folder's
name and model card (general.name, general.size_label, general.tags): ours names the file instead.
"""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import llama_cpp_sources
import numpy as np
import pytest
import torch
from gguf import GGUFReader
from seed_reference import SeedConfig, seed_model

import gpt2edu.gguf_export
from convert_checkpoint import main

# The two models: the seed's attention (no qkv bias) with a vocabulary padded to a multiple of 64 and a head of its
# own, and OpenAI's form (qkv bias, GPT-2's vocabulary, the head tied to the token embedding).
MODELS = {
    "tied": dict(vocab_size=50257, qkv_bias=True, tied=True),
    "untied": dict(vocab_size=50304, qkv_bias=False, tied=False),
}
# model, --dtype, llama.cpp's --outtype, and how OUT asks for GGUF (its name alone, or --to gguf as well)
CASES = [
    ("tied", "float32", "f32", []),
    ("untied", "float16", "f16", []),
    ("untied", "bfloat16", "bf16", ["--to", "gguf"]),
]
# Metadata that llama.cpp's converter writes from the folder's name and model card, not from the model.
INFORMATIONAL = ("general.name", "general.size_label", "general.tags", "general.basename", "general.finetune")


def write_seed(path: Path, vocab_size: int, qkv_bias: bool, tied: bool) -> Path:
    """A seed checkpoint with random weights (norms and biases too) and its config beside it."""
    config = SeedConfig(vocab_size=vocab_size, context_length=64, emb_dim=64, n_heads=4, qkv_bias=qkv_bias)
    state_dict = seed_model(**dataclasses.asdict(config)).state_dict()
    if tied:  # as the book ties the head for OpenAI's weights
        state_dict["out_head.weight"] = state_dict["tok_emb.weight"]
    torch.save(state_dict, path)
    path.with_suffix(".config.json").write_text(json.dumps(dataclasses.asdict(config)))
    return path


@pytest.fixture(scope="module")
def converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py."""
    try:
        return llama_cpp_sources.fetch() / "convert_hf_to_gguf.py"
    except RuntimeError as error:
        pytest.skip(f"llama.cpp's converter is not available: {error}")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Each model as a seed checkpoint, and as the `--to gpt2` folder the converter writes from it."""
    root = tmp_path_factory.mktemp("gguf-models")
    out = {}
    for name, spec in MODELS.items():
        seed_file = write_seed(root / f"{name}.pth", **spec)
        assert main([str(seed_file), str(root / f"{name}-gpt2"), "--to", "gpt2"]) == 0
        out[name] = (seed_file, root / f"{name}-gpt2")
    return out


def tensors(reader: GGUFReader) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape)) for t in reader.tensors}


def raw_bytes(tensor) -> np.ndarray:
    return np.asarray(tensor.data).reshape(-1).view(np.uint8)


def metadata(reader: GGUFReader) -> dict[str, tuple[list, object]]:
    """Key -> (GGUF value types, value), for every key but the informational ones and the header's."""
    fields = reader.fields.items()
    return {key: (f.types, f.contents()) for key, f in fields if not key.startswith(("GGUF.", *INFORMATIONAL))}


@pytest.mark.parametrize("model, dtype, outtype, to", CASES, ids=[f"{m}-{d}" for m, d, _, _ in CASES])
def test_gguf_equals_what_llama_cpps_converter_writes(tmp_path, converter, models, model, dtype, outtype, to):
    seed_file, gpt2_folder = models[model]
    assert main([str(seed_file), str(tmp_path / "ours.gguf"), "--dtype", dtype, *to]) == 0
    result = subprocess.run(
        [sys.executable, str(converter), str(gpt2_folder), "--outfile", str(tmp_path / "theirs.gguf")]
        + ["--outtype", outtype],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    ours, theirs = GGUFReader(tmp_path / "ours.gguf"), GGUFReader(tmp_path / "theirs.gguf")
    assert tensors(ours) == tensors(theirs)
    assert ("output.weight" in tensors(ours)) == (not MODELS[model]["tied"])  # a tied head: token_embd serves
    reference = {tensor.name: raw_bytes(tensor) for tensor in theirs.tensors}
    for tensor in ours.tensors:
        assert np.array_equal(raw_bytes(tensor), reference[tensor.name]), tensor.name
    assert metadata(ours) == metadata(theirs)
    assert ours.fields["general.name"].contents() == "ours"


def test_gguf_tensors_are_the_models_at_the_files_dtypes(tmp_path):
    """Read back independently of llama.cpp: matrices in --dtype, vectors and positions in float32, q, k, v stacked."""
    seed_file = write_seed(tmp_path / "model.pth", vocab_size=50257, qkv_bias=True, tied=False)
    assert main([str(seed_file), str(tmp_path / "model.gguf"), "--dtype", "float16"]) == 0
    seed = torch.load(seed_file, weights_only=True)
    written, written_metadata = gpt2edu.gguf_export.read_gguf(tmp_path / "model.gguf")
    blocks = "trf_blocks.1.att"
    qkv = torch.cat([seed[f"{blocks}.W_{part}.weight"] for part in ("query", "key", "value")])
    assert torch.equal(written["blk.1.attn_qkv.weight"], qkv.half())
    qkv_bias = torch.cat([seed[f"{blocks}.W_{part}.bias"] for part in ("query", "key", "value")])
    assert torch.equal(written["blk.1.attn_qkv.bias"], qkv_bias)
    assert torch.equal(written["output.weight"], seed["out_head.weight"].half())
    assert torch.equal(written["position_embd.weight"], seed["pos_emb.weight"])  # float32, as read
    assert torch.equal(written["output_norm.weight"], seed["final_norm.scale"])
    assert written_metadata["gpt2.context_length"] == 64 and written_metadata["gpt2.embedding_length"] == 64
    assert written_metadata["tokenizer.ggml.tokens"][50256] == "<|endoftext|>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.config.json", "model.gguf", "model.pth"]


# --- bad input: one line, exit 2, nothing written -------------------------------------------------------------------


def run(*args) -> int:
    """The converter's exit code, argparse's own errors included."""
    try:
        return main([str(arg) for arg in args])
    except SystemExit as error:
        return error.code


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convert_checkpoint.py: error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    "out, args, message",
    [
        ("model", ["--to", "gguf"], "--to gguf writes a .gguf file, but OUT is"),
        ("model.gguf", ["--to", "gpt2edu"], "ends in .gguf, which names a GGUF file: use --to gguf"),
        ("model.gguf", ["--to", "seed"], "--to seed writes a .pth file"),
        ("model.gguf", ["--dtype", "float64"], "argument --dtype: invalid choice: 'float64'"),
        ("model.gguf", ["--push-to-hub", "me/model"], "--push-to-hub uploads model folders; a GGUF file"),
        ("existing.gguf", [], "exists; pass --force to replace it"),
        ("folder.gguf", ["--force"], "is a folder; --to gguf writes one .gguf file"),
    ],
    ids=["not_dot_gguf", "folder_layout", "seed_layout", "dtype", "push", "exists", "folder"],
)
def test_bad_gguf_requests_are_one_line_and_write_nothing(tmp_path, capsys, out, args, message):
    seed_file = write_seed(tmp_path / "model.pth", vocab_size=50257, qkv_bias=False, tied=False)
    (tmp_path / "existing.gguf").write_bytes(b"mine")
    (tmp_path / "folder.gguf").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run(seed_file, tmp_path / out, *args) == 2
    assert message in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "existing.gguf").read_bytes() == b"mine" and not any((tmp_path / "folder.gguf").iterdir())


def test_a_model_llama_cpp_cannot_run_is_refused(tmp_path, capsys):
    """The seed's small test vocabularies: GPT-2's tokenizer, which the file carries, would make ids beyond them."""
    seed_file = write_seed(tmp_path / "model.pth", vocab_size=101, qkv_bias=False, tied=False)
    assert run(seed_file, tmp_path / "model.gguf") == 2
    assert "vocabulary has 101 tokens, fewer than the 50257 of GPT-2's tokenizer" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.config.json", "model.pth"]


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def altered(path, read_gguf=gpt2edu.gguf_export.read_gguf):
    """What a damaged write would read back: one tensor off."""
    tensors, metadata = read_gguf(path)
    tensors["output_norm.bias"] += 1
    return tensors, metadata


FAULTS = [(interrupt, 130, "interrupted"), (altered, 2, "verification failed")]


@pytest.mark.parametrize("fault, code, message", FAULTS, ids=["ctrl_c", "verification"])
def test_a_failed_write_leaves_the_old_file(tmp_path, capsys, monkeypatch, fault, code, message):
    seed_file = write_seed(tmp_path / "model.pth", vocab_size=50257, qkv_bias=False, tied=False)
    (tmp_path / "model.gguf").write_bytes(b"old")
    monkeypatch.setattr(gpt2edu.gguf_export, "read_gguf", fault)
    assert run(seed_file, tmp_path / "model.gguf", "--force") == code
    assert message in capsys.readouterr().err
    assert (tmp_path / "model.gguf").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.config.json", "model.gguf", "model.pth"]

"""The converter: seed checkpoints, GPT-2 folders and gpt2edu folders, in every direction, and safely.

Seed checkpoints are built here with an independent implementation of the seed's model (seed_reference.py), so a
conversion passes only if the converted model computes what the seed's model computes.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, tiny_config
from huggingface_hub import HfApi, ModelCard
from safetensors import safe_open
from seed_reference import SeedConfig, config_module, generate_text_simple, seed_model
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import gpt2edu.convert_outputs
import gpt2edu.convert_sources
import gpt2edu.hub
from convert_checkpoint import (
    gpt2_to_gpt2edu_state_dict,
    main,
    normalize_gpt2_keys,
    seed_to_gpt2edu_state_dict,
    strip_wrapper_prefixes,
)
from gpt2edu.files import atomic_write
from modeling_gpt2edu import GPT2EduForCausalLM

SEED_FORMS = ["bare", "dict_config", "dataclass_config", "prefixed"]
# What a Hub user does not have: the project's modules and its gpt2edu/ package.
PROJECT_MODULES = [
    "modeling_gpt2edu",
    "configuration_gpt2edu",
    "tokenization_gpt2edu",
    "convert_checkpoint",
    "gpt2edu",
]


def save_seed_checkpoint(path: Path, model, form: str, monkeypatch) -> Path:
    """Write `model` the way the seed's train.py does: a bare state dict, or save_checkpoint's dict."""
    fields = dataclasses.asdict(model.seed_config)
    state_dict = model.state_dict()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: the step fills the state, keeps the weights
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    optimizer.step()
    if form == "bare":
        torch.save(state_dict, path)
        return path
    if form == "dataclass_config":
        # The seed pickles an instance of its config.GPTConfig; the module exists only while saving, so the converter
        # has to read the file without it, as it would on a machine without the seed's code.
        module = config_module()
        monkeypatch.setitem(sys.modules, "config", module)
        config = module.GPTConfig(**fields)
    else:
        config = fields
    if form == "prefixed":
        state_dict = {f"_orig_mod.{name}": tensor for name, tensor in state_dict.items()}  # torch.compile's prefix
    torch.save(
        {"model_state_dict": state_dict, "optimizer_state_dict": optimizer.state_dict(), "config": config}, path
    )
    monkeypatch.delitem(sys.modules, "config", raising=False)
    return path


def reference_model(**overrides):
    model = seed_model(**overrides)
    model.seed_config = SeedConfig(**overrides)
    return model


def convert(*args) -> int:
    return main([str(arg) for arg in args])


def one_error_line(capsys) -> str:
    """The converter's stderr, which must be exactly one `convert_checkpoint.py: error: ...` line."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convert_checkpoint.py: error: "), lines
    return lines[0]


# --- seed checkpoints -> gpt2edu and GPT-2 ------------------------------------------------------------------------


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("form", SEED_FORMS)
def test_seed_checkpoint_converts_to_the_seed_models_logits_and_continuations(tmp_path, monkeypatch, form, qkv_bias):
    reference = reference_model(qkv_bias=qkv_bias)
    src = save_seed_checkpoint(tmp_path / "gpt2_model.pth", reference, form, monkeypatch)
    n_heads = ["--n-heads", 4] if form == "bare" else []  # a bare state dict does not say how many heads
    assert convert(src, tmp_path / "out", *n_heads) == 0

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert isinstance(model, GPT2EduForCausalLM) and model.config.qkv_bias == qkv_bias
    input_ids = torch.randint(0, 101, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, reference(input_ids))

    prompt = torch.randint(0, 101, (2, 5))
    expected = generate_text_simple(reference.double(), prompt, max_new_tokens=10, context_size=32)
    actual = model.double().generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False
    )
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_seed_checkpoint_exported_to_gpt2_gives_the_seed_models_logits(tmp_path, monkeypatch, qkv_bias):
    reference = reference_model(qkv_bias=qkv_bias)
    src = save_seed_checkpoint(tmp_path / "gpt2_model.pth", reference, "dict_config", monkeypatch)
    assert convert(src, tmp_path / "gpt2", "--to", "gpt2") == 0

    assert not list((tmp_path / "gpt2").glob("*.py"))  # plain transformers, no custom code
    model = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2").eval()
    input_ids = torch.randint(0, 101, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, reference(input_ids))


def test_bare_state_dict_assumes_head_size_64_and_says_so(tmp_path, monkeypatch, caplog):
    reference = reference_model(emb_dim=128, n_heads=2)
    src = save_seed_checkpoint(tmp_path / "gpt2_model.pth", reference, "bare", monkeypatch)
    assert convert(src, tmp_path / "out") == 0
    assert "assuming head size 64" in caplog.text and "--n-heads" in caplog.text

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert model.config.n_heads == 2
    input_ids = torch.randint(0, 101, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, reference(input_ids))


def test_dtype_stores_the_weights_rounded_once(tmp_path, monkeypatch):
    reference = reference_model()
    src = save_seed_checkpoint(tmp_path / "gpt2_model.pth", reference, "dict_config", monkeypatch)
    assert convert(src, tmp_path / "out", "--dtype", "bfloat16") == 0

    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(tmp_path / "out" / "model.safetensors", framework="pt") as weights:
        tok_emb = weights.get_tensor("model.tok_emb.weight")
    assert torch.equal(tok_emb, reference.tok_emb.weight.detach().to(torch.bfloat16))


def test_seed_mapping_renames_without_copying_and_drops_the_mask():
    reference = reference_model(qkv_bias=True)
    state_dict = reference.state_dict()
    converted = seed_to_gpt2edu_state_dict(state_dict, n_layers=2, qkv_bias=True)
    assert converted.keys() == GPT2EduForCausalLM(tiny_config(context_length=32, qkv_bias=True)).state_dict().keys()
    assert converted["model.trf_blocks.1.att.W_key.bias"] is state_dict["trf_blocks.1.att.W_key.bias"]
    assert not any(name.endswith("mask") for name in converted)


def test_wrapper_prefixes_are_stripped_at_any_nesting():
    tensor = torch.zeros(1)
    stripped = strip_wrapper_prefixes({"module._orig_mod.tok_emb.weight": tensor, "_orig_mod.out_head.weight": tensor})
    assert stripped.keys() == {"tok_emb.weight", "out_head.weight"}
    with pytest.raises(ValueError, match="twice"):
        strip_wrapper_prefixes({"module.tok_emb.weight": tensor, "tok_emb.weight": tensor})


# --- transformers' GPT-2 <-> gpt2edu ------------------------------------------------------------------------------


def gpt2_model(tie: bool) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=101,
        n_positions=32,
        n_embd=32,
        n_head=4,
        n_layer=2,
        tie_word_embeddings=tie,
        bos_token_id=100,
        eos_token_id=100,
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random biases and norms, so that a misplaced one would show
        for param in model.parameters():
            if param.dim() == 1:
                param.normal_(0.0, 0.1)
    return model


@pytest.mark.parametrize("tie", [True, False])
def test_gpt2_folder_round_trips_through_gpt2edu_bit_exactly(tmp_path, tie):
    original = gpt2_model(tie)
    original.save_pretrained(tmp_path / "gpt2")
    assert convert(tmp_path / "gpt2", tmp_path / "edu") == 0
    assert convert(tmp_path / "edu", tmp_path / "back", "--to", "gpt2") == 0

    edu = AutoModelForCausalLM.from_pretrained(tmp_path / "edu").eval()
    assert isinstance(edu, GPT2EduForCausalLM) and edu.config.tie_word_embeddings == tie
    input_ids = torch.randint(0, 101, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(edu(input_ids).logits, original(input_ids).logits, atol=1e-5, rtol=0)

    back = GPT2LMHeadModel.from_pretrained(tmp_path / "back")
    assert back.config.tie_word_embeddings == tie
    expected, actual = original.state_dict(), back.state_dict()
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_openai_hub_layout_reads_like_save_pretrained_layout():
    state_dict = gpt2_model(tie=True).state_dict()
    # OpenAI's files on the Hub come from the bare GPT2Model (no `transformer.` prefix) and hold old mask buffers.
    hub_layout = {name.removeprefix("transformer."): tensor for name, tensor in state_dict.items()}
    hub_layout["h.0.attn.bias"] = torch.ones(1, 1, 32, 32)
    expected = gpt2_to_gpt2edu_state_dict(state_dict, n_layers=2)
    actual = gpt2_to_gpt2edu_state_dict(normalize_gpt2_keys(hub_layout), n_layers=2)
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)


# --- the Hub, and loading as a Hub user with remote code ---------------------------------------------------------


@pytest.fixture
def fake_hub(tmp_path, monkeypatch) -> SimpleNamespace:
    """Replace the Hub's network edge with a folder: create_repo makes a folder, upload_folder copies the files."""
    hub = tmp_path / "hub"
    created = []

    class LocalHubApi(HfApi):
        def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
            (hub / repo_id).mkdir(parents=True, exist_ok=exist_ok)
            created.append((repo_id, private))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            # The Hub refuses a README.md whose metadata does not parse; here, too.
            ModelCard((Path(folder_path) / "README.md").read_text())
            shutil.copytree(folder_path, hub / repo_id, dirs_exist_ok=True)

    monkeypatch.setattr(gpt2edu.hub, "HfApi", LocalHubApi)
    return SimpleNamespace(root=hub, created=created)


LOAD_AS_HUB_USER = """
import json, sys
sys.modules.update({name: None for name in json.loads(sys.argv[4])})  # the project is not installed
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[2], weights_only=True)).logits, sys.argv[3])
print(json.dumps({"module": type(model).__module__, "ids": tokenizer.encode("Hello world")}))
"""


def test_pushed_folder_loads_with_remote_code_without_the_project(tmp_path, monkeypatch, fake_hub):
    reference = reference_model(qkv_bias=True)
    src = save_seed_checkpoint(tmp_path / "gpt2_model.pth", reference, "dataclass_config", monkeypatch)
    assert convert(src, tmp_path / "out", "--push-to-hub", "someone/gpt2edu-tiny", "--private") == 0
    repo = fake_hub.root / "someone" / "gpt2edu-tiny"
    assert fake_hub.created == [("someone/gpt2edu-tiny", True)]
    assert sorted(p.name for p in repo.iterdir()) == sorted(p.name for p in (tmp_path / "out").iterdir())
    card = (repo / "README.md").read_text()
    assert "parameters" in card and "seed checkpoint gpt2_model.pth" in card and "trust_remote_code=True" in card

    input_ids = torch.randint(0, 101, (2, 16))
    torch.save(input_ids, tmp_path / "input_ids.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    command = [sys.executable, "-c", LOAD_AS_HUB_USER, repo, tmp_path / "input_ids.pt", tmp_path / "logits.pt"]
    result = subprocess.run(
        [*map(str, command), json.dumps(PROJECT_MODULES)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith("transformers_modules")  # the code that came with the folder
    assert loaded["ids"] == [15496, 995]  # tiktoken's ids for "Hello world"
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), reference(input_ids))


def test_failed_push_is_one_line_and_leaves_the_folder(tmp_path, monkeypatch, capsys):
    class UnreachableHubApi(HfApi):
        def create_repo(self, *args, **kwargs):
            raise ConnectionError("Connection refused\nmore detail")

    monkeypatch.setattr(gpt2edu.hub, "HfApi", UnreachableHubApi)
    src = save_seed_checkpoint(tmp_path / "gpt2_model.pth", reference_model(), "dict_config", monkeypatch)
    assert convert(src, tmp_path / "out", "--push-to-hub", "someone/model") == 2
    assert "Connection refused" in one_error_line(capsys)
    assert (tmp_path / "out" / "model.safetensors").is_file()


# --- untrusted and bad input --------------------------------------------------------------------------------------


class Exploit:
    """Pickles as a call to os.system: what a malicious checkpoint looks like."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_that_would_run_code_is_refused_before_anything_runs(tmp_path, capsys, zip_format):
    marker = tmp_path / "exploited"
    checkpoint = {"model_state_dict": reference_model().state_dict(), "config": Exploit(marker)}
    torch.save(checkpoint, tmp_path / "evil.pth", _use_new_zipfile_serialization=zip_format)
    assert convert(tmp_path / "evil.pth", tmp_path / "out") == 2
    assert "system" in one_error_line(capsys)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_cli_refuses_a_malicious_checkpoint_without_a_traceback(tmp_path):
    marker = tmp_path / "exploited"
    torch.save({"model_state_dict": {}, "config": Exploit(marker)}, tmp_path / "evil.pth")
    command = [sys.executable, ROOT / "convert_checkpoint.py", tmp_path / "evil.pth", tmp_path / "out"]
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("convert_checkpoint.py: error: refusing to load") and "posix.system" in lines[0]
    assert not marker.exists() and not (tmp_path / "out").exists()


def write_truncated(tmp_path, checkpoint):
    data = checkpoint.read_bytes()
    (tmp_path / "bad.pth").write_bytes(data[: len(data) // 2])


def write_text(tmp_path, checkpoint):
    (tmp_path / "bad.pth").write_text("step,loss\n1,10.9\n2,10.1\n")


def write_empty(tmp_path, checkpoint):
    (tmp_path / "bad.pth").write_bytes(b"")


def write_foreign(tmp_path, checkpoint):
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "bad.pth")


def write_wrong_shape(tmp_path, checkpoint):
    state_dict = torch.load(checkpoint, weights_only=True)
    state_dict["trf_blocks.1.att.W_key.weight"] = torch.zeros(32, 30)
    torch.save(state_dict, tmp_path / "bad.pth")


def write_unknown_config_class(tmp_path, checkpoint):
    module = config_module()
    module.__name__ = module.GPTConfig.__module__ = "train"  # the right fields, under another name
    sys.modules["train"] = module
    try:
        state_dict = torch.load(checkpoint, weights_only=True)
        torch.save({"model_state_dict": state_dict, "config": module.GPTConfig()}, tmp_path / "bad.pth")
    finally:
        del sys.modules["train"]


def write_llama_folder(tmp_path, checkpoint):
    (tmp_path / "bad.pth").mkdir()
    (tmp_path / "bad.pth" / "config.json").write_text(json.dumps({"model_type": "llama"}))


@pytest.mark.parametrize(
    "write_bad_input, args, message",
    [
        (None, [], "no such file or folder"),
        (write_truncated, [], "cannot read"),
        (write_text, [], "cannot read"),
        (write_empty, [], "cannot read"),
        (write_foreign, [], "missing keys tok_emb.weight, pos_emb.weight, final_norm.scale, final_norm.shift (+"),
        (write_foreign, [], "unexpected keys weight, bias"),
        (
            write_wrong_shape,
            ["--n-heads", "4"],
            "trf_blocks.1.att.W_key.weight has shape (32, 30), but its config needs (32, 32)",
        ),
        (write_unknown_config_class, [], "train.GPTConfig"),
        (write_llama_folder, [], "'llama'"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, capsys, write_bad_input, args, message):
    checkpoint = tmp_path / "good.pth"
    torch.save(reference_model().state_dict(), checkpoint)
    if write_bad_input is not None:
        write_bad_input(tmp_path, checkpoint)
    assert convert(tmp_path / "bad.pth", tmp_path / "out", *args) == 2
    assert message in one_error_line(capsys)
    assert {p.name for p in tmp_path.iterdir()} <= {"good.pth", "bad.pth"}  # no out, no partial folder


def test_n_heads_that_contradicts_the_stored_config_is_refused(tmp_path, monkeypatch, capsys):
    src = save_seed_checkpoint(tmp_path / "gpt2_model.pth", reference_model(), "dict_config", monkeypatch)
    assert convert(src, tmp_path / "out", "--n-heads", 2) == 2
    assert "conflicting --n-heads 2: the checkpoint's config says n_heads=4" in one_error_line(capsys)


# --- writing: never half a folder, never over someone's files ------------------------------------------------------


def test_existing_folder_is_kept_unless_force(tmp_path, monkeypatch, capsys):
    src = save_seed_checkpoint(tmp_path / "gpt2_model.pth", reference_model(), "dict_config", monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert convert(src, out) == 2
    assert "--force" in one_error_line(capsys)
    assert (out / "notes.txt").read_text() == "mine"

    assert convert(src, out, "--force") == 0
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2_model.pth", "out"]  # no temporary folders left


def test_force_refuses_to_delete_the_source(tmp_path, monkeypatch):
    src = save_seed_checkpoint(tmp_path / "gpt2_model.pth", reference_model(), "dict_config", monkeypatch)
    with pytest.raises(SystemExit) as error:
        convert(src, tmp_path, "--force")
    assert error.value.code == 2 and src.is_file()


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(tmp_path / "out") as partial:
            (partial / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "out") as partial:
            raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out" / "config.json").is_file()


# --- the book's own ways of saving: tied heads, strided views, half precision --------------------------------------


def tie_head(model, copy: bool):
    """Tie the seed model's head as the book does (`out_head.weight = tok_emb.weight`), or give it equal copies."""
    if copy:
        with torch.no_grad():
            model.out_head.weight.copy_(model.tok_emb.weight)
    else:
        model.out_head.weight = model.tok_emb.weight
    return model


def fuse_qkv(model):
    """q/k/v as the book's safetensors loader leaves them: transposed chunks of one fused (emb, 3 * emb) matrix."""
    for block in model.trf_blocks:
        att = block.att
        fused = torch.cat([att.W_query.weight.T, att.W_key.weight.T, att.W_value.weight.T], dim=-1).detach().clone()
        for layer, chunk in zip((att.W_query, att.W_key, att.W_value), torch.chunk(fused, 3, dim=-1), strict=True):
            layer.weight = torch.nn.Parameter(chunk.T)  # a non-contiguous view sharing the fused matrix's memory
    return model


def assert_converts_to(reference, folder: Path, dtype=torch.float32, atol=1e-5):
    """The folder loads (as a user loads it) to a model with the reference's logits and greedy continuation."""
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert model.dtype == dtype
    input_ids = torch.randint(0, 101, (2, 24))
    with torch.no_grad():
        expected, actual = reference(input_ids).float(), model(input_ids).logits.float()
    assert (actual - expected).abs().max() < atol
    prompt = torch.randint(0, 101, (1, 5))
    expected_tokens = generate_text_simple(reference, prompt, max_new_tokens=8, context_size=32)
    actual_tokens = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
    assert torch.equal(actual_tokens, expected_tokens)
    return model


@pytest.mark.parametrize("copy", [False, True], ids=["shared_storage", "equal_copy"])
def test_tied_head_converts_to_a_tied_model_that_loads_the_same(tmp_path, copy):
    reference = tie_head(seed_model(), copy)
    torch.save(reference.state_dict(), tmp_path / "model.pth")
    assert convert(tmp_path / "model.pth", tmp_path / "out", "--n-heads", 4) == 0
    model = assert_converts_to(reference, tmp_path / "out")
    assert model.config.tie_word_embeddings and model.out_head.weight is model.model.tok_emb.weight


def test_strided_qkv_views_and_tied_head_convert(tmp_path):
    """The book's safetensors loader: q/k/v are strided views of one storage, and the head is the embedding."""
    reference = tie_head(fuse_qkv(seed_model()), copy=False)
    assert not reference.trf_blocks[0].att.W_key.weight.is_contiguous()
    torch.save(reference.state_dict(), tmp_path / "model.pth")
    assert convert(tmp_path / "model.pth", tmp_path / "out", "--n-heads", 4) == 0
    assert_converts_to(reference, tmp_path / "out")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_state_dicts_convert_as_they_are(tmp_path, dtype):
    reference = seed_model().to(dtype)
    torch.save(reference.state_dict(), tmp_path / "model.pth")
    assert convert(tmp_path / "model.pth", tmp_path / "out", "--n-heads", 4) == 0
    # The same half-precision weights, computed in float32 on both sides: equal to float32's rounding.
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert model.dtype == dtype
    input_ids = torch.randint(0, 101, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(model.float()(input_ids).logits, reference.float()(input_ids), atol=1e-5, rtol=0)


def test_verification_refuses_a_folder_that_would_load_differently(tmp_path, monkeypatch, capsys):
    """The old behaviour: the tie undetected and the shared tensors written once, so the head loads freshly made."""
    monkeypatch.setattr(gpt2edu.convert_sources, "seed_head_is_embedding", lambda state_dict: False)
    monkeypatch.setattr(gpt2edu.convert_outputs, "own_memory", lambda state_dict: state_dict)
    torch.save(tie_head(seed_model(), copy=False).state_dict(), tmp_path / "model.pth")
    assert convert(tmp_path / "model.pth", tmp_path / "out", "--n-heads", 4) == 2
    assert "verification failed" in one_error_line(capsys)
    assert {p.name for p in tmp_path.iterdir()} == {"model.pth"}


# --- the way back: gpt2edu -> the seed's .pth --------------------------------------------------------------------


def test_seed_round_trip_is_bit_exact_and_loads_strictly_in_the_seeds_model(tmp_path, monkeypatch):
    reference = reference_model()
    src = save_seed_checkpoint(tmp_path / "gpt2_model.pth", reference, "dict_config", monkeypatch)
    assert convert(src, tmp_path / "hf") == 0
    assert convert(tmp_path / "hf", tmp_path / "back.pth") == 0  # .pth: the seed's form, no --to needed

    original, back = reference.state_dict(), torch.load(tmp_path / "back.pth", weights_only=True)
    assert set(back) == set(original)
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    fields = json.loads((tmp_path / "back.config.json").read_text())
    assert fields == dataclasses.asdict(reference.seed_config)

    seed = seed_model(seed=1, **fields)  # other weights, replaced by the file's, as the book loads them
    seed.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True), strict=True)
    input_ids = torch.randint(0, 101, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(seed(input_ids), reference(input_ids), atol=0, rtol=0)


def test_gpt2_folder_with_tied_head_goes_back_to_the_seed(tmp_path):
    """OpenAI-style GPT-2 (tied head, qkv biases) -> seed .pth: the seed's model computes GPT-2's logits."""
    reference = gpt2_model(tie=True)
    reference.save_pretrained(tmp_path / "gpt2")
    assert convert(tmp_path / "gpt2", tmp_path / "gpt2.pth", "--to", "seed") == 0
    fields = json.loads((tmp_path / "gpt2.config.json").read_text())
    assert fields["qkv_bias"] is True
    seed = seed_model(**fields)
    seed.load_state_dict(torch.load(tmp_path / "gpt2.pth", weights_only=True), strict=True)
    input_ids = torch.randint(0, 101, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(seed(input_ids), reference(input_ids).logits, atol=1e-5, rtol=0)
    # and the file converts forward again, config included, with no --n-heads
    assert convert(tmp_path / "gpt2.pth", tmp_path / "again") == 0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "again").config.n_heads == fields["n_heads"]


@pytest.mark.parametrize(
    "out, args, message",
    [
        ("out.pth", ["--to", "gpt2edu"], "ends in .pth/.pt, which names a seed checkpoint"),
        ("out.pt", ["--to", "gpt2"], "ends in .pth/.pt, which names a seed checkpoint"),
        ("out", ["--to", "seed"], "--to seed writes a .pth file"),
        ("out.pth", ["--push-to-hub", "me/x"], "a seed checkpoint (--to seed) is a single .pth file"),
    ],
)
def test_seed_output_name_and_layout_must_agree(tmp_path, capsys, out, args, message):
    torch.save(seed_model().state_dict(), tmp_path / "model.pth")
    assert convert(tmp_path / "model.pth", tmp_path / out, "--n-heads", 4, *args) == 2
    assert message in one_error_line(capsys)
    assert {p.name for p in tmp_path.iterdir()} == {"model.pth"}


def test_existing_seed_file_is_kept_unless_force(tmp_path, capsys):
    torch.save(seed_model().state_dict(), tmp_path / "model.pth")
    (tmp_path / "back.pth").write_text("mine")
    assert convert(tmp_path / "model.pth", tmp_path / "back.pth", "--n-heads", 4) == 2
    assert "back.pth exists; pass --force" in one_error_line(capsys)
    assert (tmp_path / "back.pth").read_text() == "mine"
    assert convert(tmp_path / "model.pth", tmp_path / "back.pth", "--n-heads", 4, "--force") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.config.json", "back.pth", "model.pth"]


# --- a Hub id as SRC, from a Hub cache the test lays out --------------------------------------------------------


def hub_cache(tmp_path: Path, repo_id: str, folder: Path, commit: str = "a" * 40) -> Path:
    """Lay out `folder`'s files as huggingface_hub's cache holds a downloaded snapshot: blobs, a snapshot, a ref."""
    repo = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for file in folder.iterdir():
        blob = repo / "blobs" / f"{abs(hash(file.name)):x}"
        blob.write_bytes(file.read_bytes())
        (repo / "snapshots" / commit / file.name).symlink_to(os.path.relpath(blob, repo / "snapshots" / commit))
    return tmp_path / "hub"


def run_cli(*args, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **env_extra}
    return subprocess.run(
        [sys.executable, str(ROOT / "convert_checkpoint.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_hub_id_converts_from_the_hub_cache(tmp_path):
    reference = gpt2_model(tie=True)
    reference.save_pretrained(tmp_path / "saved")
    (tmp_path / "saved" / "unrelated.onnx").write_bytes(b"not needed")  # a file the converter must not need
    cache = hub_cache(tmp_path, "test-org/tiny-gpt2", tmp_path / "saved")
    result = run_cli("test-org/tiny-gpt2", tmp_path / "out", env_extra={"HF_HUB_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr
    assert "test-org/tiny-gpt2 from the Hub" in result.stdout
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert isinstance(model, GPT2EduForCausalLM)
    input_ids = torch.randint(0, 101, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, reference(input_ids).logits, atol=1e-5, rtol=0)
    prompt = torch.randint(0, 101, (1, 5))
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(prompt, **kwargs), reference.generate(prompt, **kwargs))

    by_commit = run_cli(
        "test-org/tiny-gpt2", tmp_path / "out2", "--revision", "a" * 40, env_extra={"HF_HUB_CACHE": str(cache)}
    )
    assert by_commit.returncode == 0, by_commit.stderr


def test_hub_id_not_in_the_cache_offline_is_one_line(tmp_path):
    result = run_cli("test-org/absent", tmp_path / "out", env_extra={"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "test-org/absent is no local file or folder" in lines[0], lines
    assert not (tmp_path / "out").exists()

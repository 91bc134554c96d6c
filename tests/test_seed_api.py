"""gpt2edu/seed.py: the seed's public functions by their names, on gpt2edu models, against independent references.

The references: the seed's own model and greedy loop (tests/seed_reference.py), tiktoken, the cross-entropy written
out, and `convert_checkpoint.py` with `AutoModelForCausalLM` for the checkpoints.
"""

import os
import re
import subprocess
import sys

import pytest
import tiktoken
import torch
from conftest import ROOT, SHARED, tiny_config
from seed_reference import GPTModel, SeedConfig, generate_text_simple, seed_model
from test_context_and_packing import gpt2edu_from_seed
from test_inference import seed_twin
from transformers import AutoModelForCausalLM

import convert_checkpoint
import gpt2edu
import run_inference
import train_accelerate
from configuration_gpt2edu import GPT2EduConfig
from gpt2edu import seed as api
from modeling_gpt2edu import GPT2EduForCausalLM
from tokenization_gpt2edu import gpt2_tokenizer, tiktoken_encoding

TEXT = "Every effort moves you forward.<|endoftext|> Ünïcödé, tabs\tand\nnew lines: 1234 + 5678 = 6912 "


@pytest.fixture(scope="module")
def models():
    """A seed model with random weights (norms and biases too) and the gpt2edu model with the same weights."""
    seed = seed_model(seed=7)
    return seed, gpt2edu_from_seed(seed)


@pytest.fixture(scope="module")
def gpt2_vocab_model():
    """A tiny gpt2edu model with GPT-2's 50257-token vocabulary, for the functions that take a tokenizer."""
    torch.manual_seed(0)
    config = tiny_config(vocab_size=50257, context_length=32, bos_token_id=50256, eos_token_id=50256)
    return GPT2EduForCausalLM(config).eval()


# --- the names ------------------------------------------------------------------------------------------------------


def test_every_name_imports_from_gpt2edu_seed_and_from_gpt2edu():
    assert set(api.__all__) == set(gpt2edu.SEED_API)
    for name in gpt2edu.SEED_API:
        assert getattr(gpt2edu, name) is getattr(api, name), name
    assert api.train is train_accelerate.train
    assert api.generate_response_from_prompt is run_inference.generate_response_from_prompt
    with pytest.raises(AttributeError):
        gpt2edu.no_such_name  # noqa: B018


def test_importing_the_package_or_its_cli_module_loads_no_seed_api():
    code = "import sys, gpt2edu, gpt2edu.cli; print('gpt2edu.seed' in sys.modules, 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_get_device_is_the_seeds_choice():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert api.get_device() == torch.device(expected)


# --- generation -----------------------------------------------------------------------------------------------------


def test_generate_tokens_greedy_equals_the_seeds_loop_past_the_context(models):
    seed, model = models
    context = model.config.context_length
    idx = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(1))
    expected = generate_text_simple(seed, idx, 2 * context, context_size=context)
    generated = api.generate_tokens_greedy(model, idx, max_new_tokens=2 * context, context_size=context)
    assert generated.shape == (2, 10 + 2 * context)
    assert torch.equal(generated, expected)
    # The seed's own model (its forward returns the logits) runs in it too.
    assert torch.equal(api.generate_tokens_greedy(seed, idx, 2 * context, context), expected)


def test_generate_tokens_greedy_crops_to_the_given_context_size(models):
    seed, model = models
    idx = torch.randint(0, 100, (1, 12), generator=torch.Generator().manual_seed(2))
    expected = generate_text_simple(seed, idx, 20, context_size=8)
    assert torch.equal(api.generate_tokens_greedy(model, idx, 20, context_size=8), expected)


def test_encode_and_decode_are_tiktokens(monkeypatch):
    cache = SHARED / "tiktoken-cache"
    if not cache.is_dir():
        pytest.skip(f"no tiktoken cache at {cache} (the machine is offline)")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    reference = tiktoken.get_encoding("gpt2")  # tiktoken's own, from its cache
    expected = reference.encode(TEXT, allowed_special={"<|endoftext|>"})
    assert 50256 in expected
    for tokenizer in (tiktoken_encoding(), gpt2_tokenizer()):
        token_ids = api.encode_text_to_token_ids(TEXT, tokenizer)
        assert token_ids.shape == (1, len(expected)) and token_ids.dtype == torch.long
        assert token_ids[0].tolist() == expected
        assert api.decode_token_ids_to_text(token_ids, tokenizer) == TEXT == reference.decode(expected)
    assert api.encode_text_to_token_ids("", tiktoken_encoding()).shape == (1, 0)


def test_generate_and_print_sample_prints_50_greedy_tokens(gpt2_vocab_model, capsys):
    model, tokenizer = gpt2_vocab_model, tiktoken_encoding()
    model.train()
    api.generate_and_print_sample(model, tokenizer, "cpu", "Every effort moves you")
    assert model.training  # back in training mode, as the loop expects
    idx = torch.tensor([tokenizer.encode("Every effort moves you")])
    expected = generate_text_simple(seed_twin(model), idx, 50, context_size=32)
    assert capsys.readouterr().out == tokenizer.decode(expected[0].tolist()).replace("\n", " ") + "\n"
    model.eval()


def test_generate_response_from_prompt_continues_like_the_seeds_loop(gpt2_vocab_model):
    model, tokenizer = gpt2_vocab_model, gpt2_tokenizer()
    prompt_ids = torch.tensor([tokenizer.encode("Every effort moves you")])
    expected = generate_text_simple(seed_twin(model), prompt_ids, 40, context_size=32)  # past the 32-token context
    assert tokenizer.eos_token_id not in expected  # generate() would stop there
    response = api.generate_response_from_prompt("Every effort moves you", model, 40, tokenizer)
    assert response == tokenizer.decode(expected[0, prompt_ids.shape[1] :])


# --- data -----------------------------------------------------------------------------------------------------------


def test_dataset_windows_and_targets_shifted_by_one_with_the_stride():
    tokenizer = tiktoken_encoding()
    text = (SHARED / "corpora" / "tinyshakespeare.txt").read_text()[:600]
    ids = tokenizer.encode(text)
    dataset = api.GPTDatasetV1(text, tokenizer, max_length=8, stride=5)
    starts = range(0, len(ids) - 8, 5)
    assert len(dataset) == len(starts) > 10
    for i, start in enumerate(starts):
        inputs, targets = dataset[i]
        assert inputs.tolist() == ids[start : start + 8]
        assert targets.tolist() == ids[start + 1 : start + 9]
    assert len(api.GPTDatasetV1(" ".join(["word"] * 8), tokenizer, max_length=8, stride=1)) == 0  # 8 tokens: none
    with pytest.raises(ValueError, match="stride must be at least 1"):
        api.GPTDatasetV1(text, tokenizer, max_length=8, stride=0)


def test_create_dataloader_v1_batches_the_windows_in_order_without_shuffle():
    text = (SHARED / "corpora" / "tinyshakespeare.txt").read_text()[:600]
    dataset = api.GPTDatasetV1(text, tiktoken_encoding(), max_length=6, stride=6)
    loader = api.create_dataloader_v1(text, batch_size=3, max_length=6, stride=6, shuffle=False)
    batches = list(loader)
    assert len(batches) == len(dataset) // 3  # drop_last=True
    for b, (inputs, targets) in enumerate(batches):
        assert inputs.shape == targets.shape == (3, 6)
        assert torch.equal(inputs, torch.stack([dataset[3 * b + j][0] for j in range(3)]))
        assert torch.equal(targets[:, :-1], inputs[:, 1:])
    kept = api.create_dataloader_v1(text, batch_size=3, max_length=6, stride=6, shuffle=False, drop_last=False)
    assert sum(len(inputs) for inputs, _ in kept) == len(dataset)


# --- loss and training ----------------------------------------------------------------------------------------------


def test_calc_loss_batch_is_the_mean_cross_entropy_by_hand(models):
    seed, model = models
    generator = torch.Generator().manual_seed(3)
    inputs, targets = (
        torch.randint(0, 101, (2, 9), generator=generator),
        torch.randint(0, 101, (2, 9), generator=generator),
    )
    with torch.no_grad():
        log_probs = torch.log_softmax(seed(inputs), dim=-1)  # the seed model's logits: (2, 9, 101)
        by_hand = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
        loss = api.calc_loss_batch(inputs, targets, model, "cpu")
        assert loss.shape == ()
        torch.testing.assert_close(loss, by_hand)
        torch.testing.assert_close(api.calc_loss_batch(inputs, targets, seed, "cpu"), by_hand)


def test_calc_loss_loader_and_evaluate_model_average_the_first_batches(models):
    _, model = models
    batches = [(torch.randint(0, 101, (2, 8)), torch.randint(0, 101, (2, 8))) for _ in range(4)]
    with torch.no_grad():
        losses = [api.calc_loss_batch(inputs, targets, model, "cpu").item() for inputs, targets in batches]
        assert api.calc_loss_loader(batches, model, "cpu", num_batches=2) == pytest.approx(sum(losses[:2]) / 2)
        assert api.calc_loss_loader(batches, model, "cpu") == pytest.approx(sum(losses) / 4)
        assert api.calc_loss_loader(batches, model, "cpu", num_batches=10) == pytest.approx(sum(losses) / 4)
    assert api.calc_loss_loader([], model, "cpu") != api.calc_loss_loader([], model, "cpu")  # NaN
    model.train()
    train_loss, val_loss = api.evaluate_model(model, batches, batches[2:], "cpu", eval_iter=2)
    assert model.training
    assert (train_loss, val_loss) == (pytest.approx(sum(losses[:2]) / 2), pytest.approx(sum(losses[2:]) / 2))
    model.eval()


def test_train_model_simple_lowers_the_loss_and_returns_the_histories(capsys):
    text = (SHARED / "corpora" / "tinyshakespeare.txt").read_text()[:4000]
    split = int(0.9 * len(text))
    torch.manual_seed(123)
    train_loader = api.create_dataloader_v1(text[:split], batch_size=4, max_length=32, stride=32)
    val_loader = api.create_dataloader_v1(text[split:], batch_size=4, max_length=32, stride=32, shuffle=False)
    model = GPT2EduForCausalLM(tiny_config(vocab_size=50257, context_length=32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
    train_losses, val_losses, tokens_seen = api.train_model_simple(
        model,
        train_loader,
        val_loader,
        optimizer,
        "cpu",
        num_epochs=2,
        eval_freq=4,
        eval_iter=2,
        start_context="First Citizen:",
        tokenizer=tiktoken_encoding(),
    )
    steps = 2 * len(train_loader)
    evaluated = [step for step in range(steps) if step % 4 == 0]
    assert len(train_losses) == len(val_losses) == len(tokens_seen) == len(evaluated) >= 4
    assert tokens_seen == [(step + 1) * 4 * 32 for step in evaluated]
    assert train_losses[0] > 10 and train_losses[-1] < train_losses[0] - 2  # from ln(50257) = 10.8, well down
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("Ep ") for line in printed) == len(evaluated)
    assert printed[0] == f"Ep 1 (Step 000000): Train loss {train_losses[0]:.3f}, Val loss {val_losses[0]:.3f}"
    assert sum(line.startswith("First Citizen:") for line in printed) == 2  # a sample after each epoch


# --- checkpoints ----------------------------------------------------------------------------------------------------


def one_step(model, optimizer, batch) -> None:
    optimizer.zero_grad()
    api.calc_loss_batch(*batch, model, "cpu").backward()
    optimizer.step()


@pytest.fixture
def trained_checkpoint(models, tmp_path):
    """A gpt2edu model and AdamW after one step, and their seed checkpoint written by save_checkpoint."""
    _, reference = models
    model = GPT2EduForCausalLM(reference.config)
    model.load_state_dict(reference.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = (torch.randint(0, 101, (2, 8)), torch.randint(0, 101, (2, 8)))
    one_step(model, optimizer, batch)
    path = tmp_path / "model_and_optimizer.pth"
    api.save_checkpoint(model, optimizer, path)
    return model, optimizer, path


def test_save_checkpoint_writes_the_seeds_dict_that_the_seeds_model_loads(trained_checkpoint):
    model, optimizer, path = trained_checkpoint
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint) == {"model_state_dict", "optimizer_state_dict", "config"}
    assert checkpoint["config"] == {
        name: getattr(model.config, name) for name in convert_checkpoint.SEED_CONFIG_FIELDS
    }
    seed = GPTModel(SeedConfig(**checkpoint["config"])).eval()
    seed.load_state_dict(checkpoint["model_state_dict"], strict=True)  # the seed's names, att.mask included
    idx = torch.randint(0, 101, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(seed(idx), model.eval()(idx).logits)
    assert checkpoint["optimizer_state_dict"]["state"][0]["step"] == 1
    assert not list(path.parent.glob(".*partial*"))  # written through a staging folder, nothing left behind


def test_save_checkpoint_converts_with_convert_checkpoint_to_the_same_logits(trained_checkpoint, tmp_path):
    model, _, path = trained_checkpoint
    assert convert_checkpoint.main([str(path), str(tmp_path / "converted")]) == 0
    converted = AutoModelForCausalLM.from_pretrained(tmp_path / "converted").eval()
    idx = torch.randint(0, 101, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(converted(idx).logits, model.eval()(idx).logits, rtol=0, atol=0)


def test_load_checkpoint_resumes_model_and_optimizer(trained_checkpoint):
    model, optimizer, path = trained_checkpoint
    checkpoint = api.load_checkpoint(path)
    assert set(checkpoint) == {"model_state_dict", "optimizer_state_dict", "config"}
    assert isinstance(checkpoint["config"], GPT2EduConfig) and checkpoint["config"].n_heads == model.config.n_heads
    resumed = GPT2EduForCausalLM(checkpoint["config"])
    resumed.load_state_dict(checkpoint["model_state_dict"], strict=True)
    resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=1e-3)
    resumed_optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
    batch = (torch.randint(0, 101, (2, 8)), torch.randint(0, 101, (2, 8)))
    model.train()
    resumed.train()
    one_step(model, optimizer, batch)
    one_step(resumed, resumed_optimizer, batch)  # the same second step: Adam's moments were restored
    for (name, param), resumed_param in zip(model.named_parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(resumed_param, param, rtol=0, atol=0, msg=name)


def test_load_checkpoint_of_a_bare_state_dict_has_no_optimizer(models, tmp_path):
    seed, model = models
    torch.save(seed.state_dict(), tmp_path / "gpt2_model.pth")
    (tmp_path / "gpt2_model.config.json").write_text(
        '{"vocab_size": 101, "context_length": 32, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0, '
        '"qkv_bias": false}'
    )
    checkpoint = api.load_checkpoint(tmp_path / "gpt2_model.pth")
    assert checkpoint["optimizer_state_dict"] is None
    for name in convert_checkpoint.SEED_CONFIG_FIELDS:
        assert getattr(checkpoint["config"], name) == getattr(model.config, name), name
    resumed = GPT2EduForCausalLM(checkpoint["config"]).eval()
    resumed.load_state_dict(checkpoint["model_state_dict"], strict=True)
    idx = torch.randint(0, 101, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(resumed(idx).logits, seed(idx))


@pytest.mark.parametrize("form", ["bare", "training_checkpoint", "compiled_prefix"])
def test_load_checkpoint_state_dict_loads_into_gpt2edu_with_the_seeds_logits(models, tmp_path, form):
    seed, _ = models
    state_dict = seed.state_dict()
    if form == "training_checkpoint":
        state_dict = {"model_state_dict": state_dict, "optimizer_state_dict": {}, "config": {"n_heads": 4}}
    elif form == "compiled_prefix":
        state_dict = {f"_orig_mod.{name}": tensor for name, tensor in state_dict.items()}
    torch.save(state_dict, tmp_path / "model.pth")
    loaded = api.load_checkpoint_state_dict(tmp_path / "model.pth", torch.device("cpu"))
    assert all(tensor.device.type == "cpu" for tensor in loaded.values())
    model = GPT2EduForCausalLM(tiny_config(context_length=32)).eval()
    model.load_state_dict(loaded, strict=True)
    idx = torch.randint(0, 101, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(idx).logits, seed(idx))


def test_load_checkpoint_state_dict_refuses_what_is_not_a_seed_checkpoint(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="is not a seed GPT checkpoint"):
        api.load_checkpoint_state_dict(tmp_path / "other.pth", "cpu")


def test_train_is_the_trainers_and_runs(tmp_path):
    text = (ROOT / "data" / "default_corpus.txt").read_text()[:6000]
    config = dict(emb_dim=32, n_heads=2, n_layers=2, context_length=32, drop_rate=0.0)
    train_losses, val_losses, tokens_seen, model = gpt2edu.train(
        text, num_epochs=1, batch_size=4, learning_rate=3e-3, eval_freq=5, config=config, output_dir=str(tmp_path)
    )
    assert isinstance(model, GPT2EduForCausalLM) and len(train_losses) == len(val_losses) == len(tokens_seen) >= 2


# --- the README's example -------------------------------------------------------------------------------------------


def readme_example() -> str | None:
    """The python block of the README's section "The seed's API"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^#+ The seed's API\n(.*?)(?=^#+ |\Z)", readme, flags=re.M | re.S)
    block = section and re.search(r"```python\n(.*?)```", section.group(1), flags=re.S)
    return block.group(1) if block else None


def test_readme_seed_example_runs_as_written(tmp_path):
    example = readme_example()
    assert example is not None, "README.md has no section 'The seed's API' with a python block"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "default_corpus.txt").write_text((ROOT / "data" / "default_corpus.txt").read_text())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("Ep 1 (Step 000000): Train loss 10.")
    sample = [line for line in result.stdout.splitlines() if line.startswith("Every effort moves you")][0]
    generated = result.stdout.split(sample + "\n", 1)[1]  # after train_model_simple's sample: the final print
    assert generated.startswith("Every effort moves you") and len(generated) > len("Every effort moves you") + 20
    assert (tmp_path / "model_and_optimizer.pth").is_file()

"""run_inference.py: the library function, the command line, and its bad inputs."""

import ast
import logging
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from seed_reference import GPTModel, SeedConfig, generate_text_simple
from test_model import greedy_reference
from transformers import GPT2Config, GPT2LMHeadModel

import convert_checkpoint
import run_inference
from modeling_gpt2edu import GPT2EduForCausalLM
from run_inference import generate_response_from_prompt

PROMPT = "Every effort moves you"


def seed_twin(model: GPT2EduForCausalLM) -> GPTModel:
    """The seed's GPTModel (tests/seed_reference.py) holding a gpt2edu model's weights, in the seed's names."""
    fields = {name: getattr(model.config, name) for name in convert_checkpoint.SEED_CONFIG_FIELDS}
    seed = GPTModel(SeedConfig(**fields)).eval()
    seed.load_state_dict(convert_checkpoint.gpt2edu_to_seed_state_dict(dict(model.state_dict()), model.config))
    return seed


def expected_continuation(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    prompt_ids = tokenizer(prompt).input_ids
    output = greedy_reference(model, torch.tensor([prompt_ids]), max_new_tokens)
    return tokenizer.decode(output[0, len(prompt_ids) :])


def test_library_function_is_greedy_like_the_seed(saved_model, tokenizer):
    model, folder = saved_model
    expected = expected_continuation(model, tokenizer, PROMPT, 12)
    assert generate_response_from_prompt(PROMPT, model=model, max_new_tokens=12, tokenizer=tokenizer) == expected
    assert generate_response_from_prompt(PROMPT, model=str(folder), max_new_tokens=12) == expected


def test_command_line_prints_prompt_and_continuation(saved_model, tokenizer):
    model, folder = saved_model
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_inference.py"),
            "--model",
            str(folder),
            "--prompt",
            PROMPT,
            "--max-new-tokens",
            "15",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == PROMPT + expected_continuation(model, tokenizer, PROMPT, 15) + "\n"
    assert "Traceback" not in result.stderr


def test_sampling_is_reproducible_with_a_seed(saved_model, capsys):
    _, folder = saved_model
    args = ["--model", str(folder), "--prompt", PROMPT, "--do-sample", "--top-k", "50", "--temperature", "1.5"]
    outputs = []
    for seed in ("1", "1", "2"):
        assert run_inference.main([*args, "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]
    assert all(output.startswith(PROMPT) for output in outputs)


def test_command_line_goes_past_the_context_like_the_seeds_loop(saved_model, tokenizer, capsys):
    """--max-new-tokens twice the context: the seed's loop's tokens (tests/seed_reference.py) on the same weights."""
    model, folder = saved_model
    context = model.config.context_length
    prompt_ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    expected = generate_text_simple(seed_twin(model), prompt_ids, 2 * context, context_size=context)
    new_ids = expected[0, prompt_ids.shape[1] :]
    assert len(new_ids) == 2 * context and tokenizer.eos_token_id not in new_ids  # generate() would stop there

    assert run_inference.main(["--model", str(folder), "--prompt", PROMPT, "--max-new-tokens", str(2 * context)]) == 0
    assert capsys.readouterr().out == PROMPT + tokenizer.decode(new_ids) + "\n"  # the text of those token ids


def test_prompt_longer_than_the_context_is_read_as_the_seeds_loop_reads_it(saved_model, tokenizer, caplog):
    """No cropping up front: at each step the model reads the last context_length tokens of the text so far."""
    model, _ = saved_model
    prompt = " ".join(str(i) for i in range(100))  # far more than the 64-token context
    prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids
    expected = generate_text_simple(seed_twin(model), prompt_ids, 8, context_size=64)
    with caplog.at_level(logging.WARNING):
        response = generate_response_from_prompt(prompt, model=model, max_new_tokens=8, tokenizer=tokenizer)
    assert response == tokenizer.decode(expected[0, prompt_ids.shape[1] :])
    assert f"The prompt has {prompt_ids.shape[1]} tokens, more than the model's 64-token context" in caplog.text
    assert "reads only the last 64 tokens" in caplog.text
    assert "indexing errors" not in caplog.text  # the tokenizer's own warning, which no longer applies


@pytest.fixture(scope="module")
def gpt2_model():
    """transformers' own GPT-2, tiny, with GPT-2's vocabulary and a 64-token context: it stops at its context."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    return GPT2LMHeadModel(config).eval()


def test_a_model_that_stops_at_its_context_gets_its_prompt_cropped(gpt2_model, tokenizer, caplog):
    prompt = " ".join(str(i) for i in range(100))
    with caplog.at_level(logging.WARNING):
        response = generate_response_from_prompt(prompt, model=gpt2_model, max_new_tokens=4, tokenizer=tokenizer)
    assert "keeping its last 60" in caplog.text
    cropped = tokenizer.decode(tokenizer(prompt).input_ids[-60:])
    assert response == expected_continuation(gpt2_model, tokenizer, cropped, 4)
    with pytest.raises(ValueError, match="a gpt2 model stops at its 64-token context: max_new_tokens must be between"):
        generate_response_from_prompt("hi", model=gpt2_model, max_new_tokens=64, tokenizer=tokenizer)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "{tmp}/missing", "--prompt", "hi"], "no such folder"),
        (["--model", "{tmp}", "--prompt", "hi"], "no config.json"),
        (["--model", "{model}", "--prompt", ""], "--prompt is empty"),
        (["--model", "{model}", "--prompt", "hi", "--max-new-tokens", "-5"], "--max-new-tokens must be at least 1"),
        (["--model", "{model}", "--prompt", "hi", "--do-sample", "--temperature", "0"], "--temperature"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(saved_model, tmp_path, capsys, args, message):
    _, folder = saved_model
    args = [arg.format(tmp=tmp_path, model=folder) for arg in args]
    try:
        code = run_inference.main(args)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert ": error: " in captured.err.strip().splitlines()[-1]
    assert "Traceback" not in captured.err and captured.out == ""


PROGRAMS = {"run_inference", "inspect_model", "train_accelerate", "convert_checkpoint"}


@pytest.mark.parametrize(
    "source", ["run_inference.py", "inspect_model.py", "gpt2edu/loading.py", "gpt2edu/generation.py"]
)
def test_no_program_imports_another_program(source):
    """The programs share code through the gpt2edu/ package only; run_inference keeps its library names."""
    tree = ast.parse((ROOT / source).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name.split(".")[0] for name in imported} & PROGRAMS
    for name in ("get_device", "load_checked_model", "load_model_and_tokenizer", "generate_response_from_prompt"):
        assert callable(getattr(run_inference, name))


def test_going_past_the_context_prints_no_reminder_that_it_should_not(saved_model):
    """transformers reminds once that a call exceeds the model's maximum length; gpt2edu goes on past it by design."""
    _, folder = saved_model
    command = [sys.executable, str(ROOT / "run_inference.py"), "--model", str(folder), "--prompt", PROMPT]
    result = subprocess.run([*command, "--max-new-tokens", "100"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "maximum length" not in result.stderr, result.stderr

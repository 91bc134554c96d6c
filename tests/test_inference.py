"""run_inference.py: the library function, the command line, and its bad inputs."""

import ast
import logging
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from test_model import greedy_reference

import run_inference
from run_inference import generate_response_from_prompt

PROMPT = "Every effort moves you"


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


def test_long_prompt_is_cropped_to_its_last_tokens(saved_model, tokenizer, caplog):
    model, _ = saved_model
    prompt = " ".join(str(i) for i in range(100))  # far more than the 64-token context
    with caplog.at_level(logging.WARNING):
        response = generate_response_from_prompt(prompt, model=model, max_new_tokens=4, tokenizer=tokenizer)
    assert "keeping its last 60" in caplog.text
    cropped = tokenizer.decode(tokenizer(prompt).input_ids[-60:])
    assert response == expected_continuation(model, tokenizer, cropped, 4)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "{tmp}/missing", "--prompt", "hi"], "no such folder"),
        (["--model", "{tmp}", "--prompt", "hi"], "no config.json"),
        (["--model", "{model}", "--prompt", ""], "--prompt is empty"),
        (["--model", "{model}", "--prompt", "hi", "--max-new-tokens", "-5"], "--max-new-tokens must be at least 1"),
        (
            ["--model", "{model}", "--prompt", "hi", "--max-new-tokens", "64"],
            "max_new_tokens must be between 1 and 63",
        ),
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


@pytest.mark.parametrize("source", ["run_inference.py", "inspect_model.py", "gpt2edu/loading.py"])
def test_no_program_imports_another_program(source):
    """The programs share code through the gpt2edu/ package only; run_inference keeps its library names."""
    tree = ast.parse((ROOT / source).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name.split(".")[0] for name in imported} & PROGRAMS
    for name in ("get_device", "load_checked_model", "load_model_and_tokenizer", "generate_response_from_prompt"):
        assert callable(getattr(run_inference, name))

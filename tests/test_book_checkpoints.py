"""The book's checkpoints everywhere: its .pth files in every program, its chapter-6 classifier through the converter.

The references are independent of gpt2edu's model: the seed's own `GPTModel` and greedy loop (tests/seed_reference.py),
the book's classifier (that model with `out_head` replaced by `Linear(emb_dim, 2)`) and its last-position pooling.
"""

import ast
import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from seed_reference import generate_text_simple, seed_model

import inspect_model
import run_inference
import train_accelerate
from gpt2edu import train_args
from gpt2edu.loading import load_checked_model

PROMPT = "Every effort moves you"
PROGRAMS = {"run_inference", "inspect_model", "train_accelerate", "convert_checkpoint"}
SEED_SIZES = dict(vocab_size=50257, context_length=32, emb_dim=32, n_heads=4, n_layers=2)


# --- the library imports no program -------------------------------------------------------------------------------


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (functions included), and every module named to importlib."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    for node in ast.walk(tree):  # importlib.import_module("x") and __import__("x")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            names |= {arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("path", sorted((ROOT / "gpt2edu").glob("*.py")), ids=lambda path: path.name)
def test_the_library_imports_no_program(path):
    assert not imported_modules(path) & PROGRAMS, f"gpt2edu/{path.name} imports a program"


def test_the_import_check_sees_an_import_inside_a_function(tmp_path):
    (tmp_path / "lazy.py").write_text("def f():\n    from train_accelerate import train\n    return train\n")
    (tmp_path / "dynamic.py").write_text("import importlib\nimportlib.import_module('convert_checkpoint')\n")
    assert imported_modules(tmp_path / "lazy.py") & PROGRAMS == {"train_accelerate"}
    assert imported_modules(tmp_path / "dynamic.py") & PROGRAMS == {"convert_checkpoint"}


# --- the book's .pth files in every program ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def book_files(tmp_path_factory) -> dict:
    """The book's model (random weights) saved as the book saves it: a bare state dict (with the seed's config beside
    it, as convert_checkpoint.py writes one) and a training checkpoint dict with its config inside."""
    folder = tmp_path_factory.mktemp("book")
    model = seed_model(seed=5, **SEED_SIZES)
    torch.save(model.state_dict(), folder / "gpt2_model.pth")
    fields = dict(SEED_SIZES, drop_rate=0.0, qkv_bias=False)
    (folder / "gpt2_model.config.json").write_text(json.dumps(fields))
    checkpoint = {"model_state_dict": model.state_dict(), "optimizer_state_dict": {}, "config": fields}
    torch.save(checkpoint, folder / "model_and_optimizer.pth")
    bare, as_dict = folder / "gpt2_model.pth", folder / "model_and_optimizer.pth"
    return {"model": model, "folder": folder, "bare": bare, "dict": as_dict}


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def the_books_continuation(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """What the book's loop generates from the book's model."""
    prompt_ids = tokenizer(prompt).input_ids
    output = generate_text_simple(model, torch.tensor([prompt_ids]), max_new_tokens, SEED_SIZES["context_length"])
    return tokenizer.decode(output[0, len(prompt_ids) :])


def run_program(main, args: list[str], capfd) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, prog: str | None, message: str) -> None:
    """One line `PROG: error: ...` (the trainer names itself by sys.argv[0], which in-process is pytest's)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and f"{prog or ''}: error: " in lines[0] and message in lines[0], err


@pytest.mark.parametrize("form", ["bare", "dict"])
def test_run_inference_continues_a_pth_as_the_books_loop_and_writes_nothing(book_files, tokenizer, capfd, form):
    before = fingerprint(book_files["folder"])
    args = ["--model", str(book_files[form]), "--prompt", PROMPT, "--max-new-tokens", "8"]
    code, out, err = run_program(run_inference.main, args, capfd)
    assert code == 0, err
    assert out == PROMPT + the_books_continuation(book_files["model"], tokenizer, PROMPT, 8) + "\n"
    assert fingerprint(book_files["folder"]) == before


def test_run_inference_with_no_arguments_is_the_seeds_run(book_files, tokenizer, capfd, monkeypatch, tmp_path):
    """The seed's defaults: gpt2_model.pth in the working directory, "Every effort moves you", 20 new tokens."""
    monkeypatch.chdir(book_files["folder"])
    code, out, err = run_program(run_inference.main, [], capfd)
    assert code == 0, err
    assert out == PROMPT + the_books_continuation(book_files["model"], tokenizer, PROMPT, 20) + "\n"
    monkeypatch.chdir(tmp_path)  # no gpt2_model.pth here
    code, out, err = run_program(run_inference.main, [], capfd)
    assert_one_line_error(code, err, "run_inference.py", "no --model given, and no gpt2_model.pth")
    assert out == ""


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capfd):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    code, out, err = run_program(run_inference.main, ["--model", str(tmp_path / "notes.pth")], capfd)
    assert_one_line_error(code, err, "run_inference.py", "as a PyTorch checkpoint")
    assert out == ""


def test_inspect_model_reads_a_pth(book_files, tokenizer, tmp_path, capfd):
    out = tmp_path / "inspect"
    args = ["--model", str(book_files["dict"]), "--prompt", PROMPT, "--out", str(out), "--top-k", "3"]
    code, _, err = run_program(inspect_model.main, args, capfd)
    assert code == 0, err
    record = json.loads((out / "inspection.json").read_text(encoding="utf-8"))
    with torch.no_grad():
        logits = book_files["model"](torch.tensor([tokenizer(PROMPT).input_ids]))[0, -1]
    top = torch.softmax(logits, dim=-1).topk(3)
    assert [item["token_id"] for item in record["next_token"]] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([item["prob"] for item in record["next_token"]]), top.values)


def test_the_trainer_starts_from_a_pth(book_files, tmp_path, capfd):
    """The start model is the book's, tensor for tensor; a short run trains it and leaves the .pth as it was."""
    start = train_args.load_start_model(str(book_files["bare"]))
    ids = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(start(ids).logits, book_files["model"](ids))
    before = fingerprint(book_files["folder"])
    out = tmp_path / "out"
    args = ["--model_name_or_path", str(book_files["bare"]), "--output_dir", str(out), "--max_train_steps", "2",
            "--per_device_train_batch_size", "2", "--eval_iters", "1", "--eval_steps", "2"]  # fmt: skip
    code, _, err = run_program(train_accelerate.main, args, capfd)
    assert code == 0, err
    trained = load_checked_model(str(out))
    assert not torch.equal(trained.model.tok_emb.weight, start.model.tok_emb.weight)  # it trained
    assert fingerprint(book_files["folder"]) == before  # training never writes into the memory-mapped file


# --- generation_config.json that is not JSON: refused by every program that loads one -----------------------------


@pytest.fixture
def broken_generation_config(saved_model, tmp_path) -> Path:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(saved_model[1], folder)
    (folder / "generation_config.json").write_text('{"max_new_tokens": 5,')
    return folder


GENERATION_CONFIG_MESSAGE = "generation_config.json is not valid JSON"


def test_run_inference_refuses_a_generation_config_that_is_not_json(broken_generation_config, capfd):
    code, out, err = run_program(run_inference.main, ["--model", str(broken_generation_config)], capfd)
    assert_one_line_error(code, err, "run_inference.py", GENERATION_CONFIG_MESSAGE)
    assert out == ""


def test_inspect_model_refuses_a_generation_config_that_is_not_json(broken_generation_config, tmp_path, capfd):
    args = ["--model", str(broken_generation_config), "--prompt", PROMPT, "--out", str(tmp_path / "out")]
    code, _, err = run_program(inspect_model.main, args, capfd)
    assert code == 2 and GENERATION_CONFIG_MESSAGE in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_the_trainer_refuses_a_generation_config_that_is_not_json(broken_generation_config, tmp_path, capfd):
    args = ["--model_name_or_path", str(broken_generation_config), "--output_dir", str(tmp_path / "out")]
    code, _, err = run_program(train_accelerate.main, args, capfd)
    assert_one_line_error(code, err, None, GENERATION_CONFIG_MESSAGE)
    assert not (tmp_path / "out").exists()

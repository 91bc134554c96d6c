"""run_inference.py on bad input (issue 11): each case ends with one line on stderr naming the problem and the fix.

Damaged model folders are made from a copy of the session's tiny model. The command line runs in-process (main())
with capfd, which sees everything written to the process's stdout and stderr, transformers' warnings included; the
cases that only a real process shows (argv bytes that are not UTF-8, a closed stdout) and a few folder cases run
run_inference.py as a subprocess.
"""

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, tiny_config
from safetensors.torch import load_file, save_file

import run_inference
from modeling_gpt2edu import GPT2EduForCausalLM
from run_inference import generate_response_from_prompt, load_checked_model

PROMPT = "Every effort moves you"

# --- ways to damage a model folder ----------------------------------------------------------------------------------


def rewrite_weights(folder: Path, change) -> None:
    """Replace model.safetensors by `change(state_dict)`, written as a valid safetensors file."""
    state_dict = {name: tensor.clone() for name, tensor in load_file(folder / "model.safetensors").items()}
    save_file(change(state_dict), folder / "model.safetensors", metadata={"format": "pt"})


def drop_second_layer(folder: Path) -> None:  # config.json says 2 layers, the weights hold 1
    rewrite_weights(folder, lambda sd: {k: v for k, v in sd.items() if not k.startswith("model.trf_blocks.1.")})


def add_tensor(folder: Path) -> None:
    rewrite_weights(folder, lambda sd: {**sd, "model.extra.weight": torch.zeros(3)})


def nan_in_head(folder: Path) -> None:  # as a converted checkpoint whose head is NaN
    def change(state_dict):
        state_dict["out_head.weight"][5, 7] = float("nan")
        return state_dict

    rewrite_weights(folder, change)


def overwrite_data(folder: Path) -> None:
    """Overwrite part of the tensor data with 0xff bytes (a float32 NaN), leaving the header intact."""
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    data[start + 4096 : start + 65536] = b"\xff" * (65536 - 4096)
    path.write_bytes(data)


def truncate_weights(folder: Path) -> None:  # safetensors: "incomplete metadata, file not fully covered"
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def header_too_large(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 10**12)
    path.write_bytes(data)


def header_too_small(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"\x01\x02\x03")


def pickle_with_a_class(folder: Path) -> None:
    """pytorch_model.bin instead of model.safetensors, pickling more than tensors (an argparse.Namespace)."""
    state_dict = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state_dict, "args": argparse.Namespace(lr=1e-3)}, folder / "pytorch_model.bin")


def truncated_pickle(folder: Path) -> None:
    state_dict = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state_dict, folder / "pytorch_model.bin")
    path = folder / "pytorch_model.bin"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def plain_pickle(folder: Path) -> None:
    """pytorch_model.bin holding only the state dict, as older transformers saved: read weights-only."""
    state_dict = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state_dict, folder / "pytorch_model.bin")


def edit_config(**changes):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def unknown_model_type(folder: Path) -> None:
    """A model type nobody registered; config.json keeps gpt2edu's auto_map, but the code files are gone."""
    edit_config(model_type="llama-ish-unknown")(folder)
    for path in folder.glob("*.py"):
        path.unlink()


def unknown_model_type_with_code(folder: Path) -> None:  # transformers would ask on stdin whether to run the code
    edit_config(model_type="llama-ish-unknown")(folder)


def truncate_tokenizer(folder: Path) -> None:
    path = folder / "tokenizer.json"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def truncate_tokenizer_config(folder: Path) -> None:
    (folder / "tokenizer_config.json").write_text('{"backend": "tok')


def empty_tokenizer(folder: Path) -> None:  # valid JSON, but no tokenizer in it
    (folder / "tokenizer.json").write_text("{}")


def remove_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").unlink()


def break_config_json(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "gpt2edu",')


def damaged_copy(saved_model, tmp_path: Path, damage) -> Path:
    _, folder = saved_model
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    if damage is not None:
        damage(copy)
    return copy


def fingerprint(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def run_main(args: list[str], capfd) -> tuple[int, str, str]:
    """main(args) as the command line runs it: exit code, stdout, stderr (at the file-descriptor level)."""
    try:
        code = run_inference.main(args)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, out: str, err: str, message: str, exit_code: int = 2) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == exit_code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("run_inference.py: error: "), err
    assert message in lines[0], err
    assert "Traceback" not in err
    assert out == ""  # nothing generated from a bad model or with bad options


# --- damaged model folders ------------------------------------------------------------------------------------------

FOLDER_CASES = [
    (drop_second_layer, "missing: model.trf_blocks.1.att.W_key.weight"),
    (add_tensor, "not in the model: model.extra.weight"),
    (nan_in_head, "weight out_head.weight holds NaN or infinite values (1 of"),
    (overwrite_data, "holds NaN or infinite values"),
    (truncate_weights, "model.safetensors is damaged or incomplete (Error while deserializing header: incomplete"),
    (
        header_too_large,
        "model.safetensors is damaged or incomplete (Error while deserializing header: header too large",
    ),
    (
        header_too_small,
        "model.safetensors is damaged or incomplete (Error while deserializing header: header too small",
    ),
    (
        pickle_with_a_class,
        "pytorch_model.bin is a pickle that holds more than weights (it would import argparse.Names",
    ),
    (truncated_pickle, "pytorch_model.bin cannot be read as a PyTorch state dict"),
    (unknown_model_type, "declares model_type 'llama-ish-unknown', which neither gpt2edu nor transformers knows"),
    (unknown_model_type_with_code, "declares model_type 'llama-ish-unknown'"),
    (
        edit_config(emb_dim=64),
        "config.json does not fit its weights: model.final_norm.scale is 32 in the weights but 64",
    ),
    (edit_config(context_length=128), "model.pos_emb.weight is 64x32 in the weights but 128x32 by config.json;"),
    (edit_config(vocab_size=50000), "model.tok_emb.weight is 50257x32 in the weights but 50000x32 by config.json"),
    (truncate_tokenizer, os.sep + "tokenizer.json is not valid JSON: Expecting"),
    (truncate_tokenizer_config, "tokenizer_config.json is not valid JSON: Unterminated string"),
    (empty_tokenizer, "its tokenizer cannot be loaded (KeyError: 'added_tokens')"),
    (break_config_json, "config.json is not valid JSON"),
]


@pytest.mark.parametrize("damage, message", FOLDER_CASES, ids=[case[0].__name__ for case in FOLDER_CASES])
def test_damaged_folder_is_one_line_and_nothing_generated(saved_model, tmp_path, capfd, damage, message):
    folder = damaged_copy(saved_model, tmp_path, damage)
    before = fingerprint(folder)
    code, out, err = run_main(["--model", str(folder), "--prompt", PROMPT, "--max-new-tokens", "3"], capfd)
    assert_one_line_error(code, out, err, message)
    assert fingerprint(folder) == before  # nothing damaged further


@pytest.mark.parametrize("message_part", ["ignore_mismatched_sizes", "trust_remote_code"])
def test_messages_suggest_no_flag_we_do_not_have(saved_model, tmp_path, capfd, message_part):
    damage = edit_config(emb_dim=64) if message_part == "ignore_mismatched_sizes" else unknown_model_type
    folder = damaged_copy(saved_model, tmp_path, damage)
    _, _, err = run_main(["--model", str(folder), "--prompt", PROMPT], capfd)
    assert message_part not in err


@pytest.mark.parametrize("change", [remove_tokenizer, plain_pickle], ids=["no_tokenizer_files", "plain_pickle"])
def test_folders_that_still_load(saved_model, tmp_path, capfd, change):
    """A folder without tokenizer files gets GPT-2's tokenizer; a weights-only pytorch_model.bin is read."""
    good = damaged_copy(saved_model, tmp_path / "good", None)
    changed = damaged_copy(saved_model, tmp_path / "changed", change)
    outputs = [
        run_main(["--model", str(folder), "--prompt", PROMPT, "--max-new-tokens", "5"], capfd)
        for folder in (good, changed)
    ]
    assert outputs[0][0] == 0 and outputs[0][1].startswith(PROMPT)
    assert outputs[1] == outputs[0]


def test_tokenizer_of_another_model_is_refused(tmp_path, capfd):
    """A 101-token model saved without a tokenizer gets GPT-2's, whose ids it cannot embed: refused."""
    GPT2EduForCausalLM(tiny_config()).save_pretrained(tmp_path)
    code, out, err = run_main(["--model", str(tmp_path), "--prompt", PROMPT], capfd)
    assert_one_line_error(code, out, err, "but the model knows only 101 tokens")


# --- bad options ----------------------------------------------------------------------------------------------------

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")

OPTION_CASES = [
    pytest.param(["--device", "cuda"], "--device 'cuda' is not available", marks=no_cuda, id="cuda_without_cuda"),
    pytest.param(["--device", "cuda:99"], "--device 'cuda:99'", id="cuda_99"),
    pytest.param(["--device", "meta"], "--device 'meta' holds shapes but no values", id="meta"),
    pytest.param(["--device", "gpu"], "--device 'gpu' is not a device name; use cpu, cuda", id="not_a_device"),
    pytest.param(["--seed", "-1"], "--seed must be between 0 and 4294967295, got -1", id="seed_negative"),
    pytest.param(["--seed", str(2**40)], f"--seed must be between 0 and 4294967295, got {2**40}", id="seed_2_40"),
    pytest.param(["--do-sample", "--temperature", "inf"], "--temperature must be a positive finite", id="temp_inf"),
    pytest.param(["--do-sample", "--temperature", "nan"], "--temperature must be a positive finite", id="temp_nan"),
    pytest.param(["--top-p", "nan"], "--top-p must be in (0, 1], got nan", id="top_p_nan"),
    pytest.param(["--seed", "x"], "argument --seed: invalid int value: 'x'", id="argparse_own_error"),
]


@pytest.mark.parametrize("extra, message", OPTION_CASES)
def test_bad_option_is_one_line(saved_model, capfd, extra, message):
    _, folder = saved_model
    code, out, err = run_main(["--model", str(folder), "--prompt", PROMPT, *extra], capfd)
    assert_one_line_error(code, out, err, message)


def test_prompt_that_is_not_utf8_in_process(saved_model, capfd):
    """On Linux, argv bytes that are not UTF-8 reach sys.argv as surrogate escapes: b"caf\\xe9" -> "caf\\udce9"."""
    _, folder = saved_model
    code, out, err = run_main(["--model", str(folder), "--prompt", "caf\udce9"], capfd)
    assert_one_line_error(code, out, err, "--prompt is not UTF-8 text (byte 0xe9 at position 3)")


# --- load_checked_model, the library function -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage, message",
    [
        (drop_second_layer, r"missing: model\.trf_blocks\.1\.att\.W_key\.weight, .* \(\+10 more\)"),
        (add_tensor, r"not in the model: model\.extra\.weight"),
        (edit_config(context_length=128), r"model\.pos_emb\.weight is 64x32 in the weights but 128x32"),
        (nan_in_head, r"weight out_head\.weight holds NaN or infinite values \(1 of 1608224\)"),
        (header_too_small, r"model\.safetensors is damaged or incomplete"),
    ],
    ids=["missing", "unexpected", "mismatched", "non_finite", "damaged_file"],
)
def test_load_checked_model_refuses(saved_model, tmp_path, damage, message):
    folder = damaged_copy(saved_model, tmp_path, damage)
    with pytest.raises(ValueError, match=message) as error:
        load_checked_model(str(folder))
    assert "\n" not in str(error.value)


def test_library_function_refuses_a_prompt_that_is_not_utf8(saved_model, tokenizer):
    model, _ = saved_model
    with pytest.raises(ValueError, match=r"the prompt is not UTF-8 text \(byte 0xe9 at position 3\)"):
        generate_response_from_prompt("caf\udce9", model=model, tokenizer=tokenizer)


def test_load_checked_model_loads_a_good_folder_exactly(saved_model):
    model, folder = saved_model
    loaded = load_checked_model(str(folder))
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)


# --- as a real process ----------------------------------------------------------------------------------------------


def run_cli(args: list, stdout=subprocess.PIPE, text: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "run_inference.py"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=text, timeout=120, env=env)


@pytest.mark.parametrize(
    "damage, message",
    [
        (drop_second_layer, "missing: model.trf_blocks.1.att.W_key.weight"),
        (header_too_large, "header too large"),
        (pickle_with_a_class, "holds more than weights"),
    ],
    ids=["missing_weights", "damaged_safetensors", "pickle"],
)
def test_command_line_damaged_folder(saved_model, tmp_path, damage, message):
    folder = damaged_copy(saved_model, tmp_path, damage)
    result = run_cli(["--model", str(folder), "--prompt", PROMPT, "--max-new-tokens", "3"], text=True)
    assert_one_line_error(result.returncode, result.stdout, result.stderr, message)


def test_command_line_prompt_bytes_not_utf8(saved_model):
    _, folder = saved_model
    result = run_cli(["--model", str(folder), "--prompt", b"caf\xe9"], text=True)
    assert_one_line_error(result.returncode, result.stdout, result.stderr, "--prompt is not UTF-8 text (byte 0xe9")


def closed_pipe() -> int:
    """The write end of a pipe whose reader has gone: as `| head -c 0`, without the race of a real head."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


STDOUT_CASES = {
    "closed_pipe": (closed_pipe, 1, "stdout was closed before the whole text was written (as by | head)"),
    "full_disk": (lambda: os.open("/dev/full", os.O_WRONLY), 2, "cannot write the text to stdout (No space left"),
    "closed": (None, 2, "stdout is closed; run with stdout open"),
}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("case", STDOUT_CASES)
def test_command_line_stdout_that_cannot_be_written(saved_model, case):
    open_stdout, exit_code, message = STDOUT_CASES[case]
    _, folder = saved_model
    args = [sys.executable, str(ROOT / "run_inference.py"), "--model", str(folder), "--prompt", PROMPT]
    stdout = open_stdout() if open_stdout else subprocess.DEVNULL
    try:
        result = subprocess.run(
            [*args, "--max-new-tokens", "5"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            preexec_fn=None if open_stdout else lambda: os.close(1),  # as `>&-`
        )
    finally:
        if open_stdout:
            os.close(stdout)
    assert_one_line_error(result.returncode, "", result.stderr, message, exit_code=exit_code)

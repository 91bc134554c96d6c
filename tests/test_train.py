"""train_accelerate.py: training that learns, folders that load, and resumes that lose nothing."""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from conftest import ROOT, SHARED
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import load_file
from transformers import AutoTokenizer

import train_accelerate
from configuration_gpt2edu import GPT2EduConfig
from gpt2edu import train_args
from gpt2edu.cli import UsageError
from modeling_gpt2edu import GPT2EduForCausalLM

SCRIPT = str(ROOT / "train_accelerate.py")
TINY = [
    "--config_overrides", "emb_dim=32,n_heads=2,n_layers=2,context_length=32", "--per_device_train_batch_size", "4",
    "--per_device_eval_batch_size", "4", "--eval_iters", "2", "--eval_steps", "10", "--logging_steps", "1",
    "--seed", "7",
]  # fmt: skip
RESUMABLE = [*TINY, "--max_train_steps", "30", "--checkpointing_steps", "5"]
STREAMED = [*RESUMABLE, "--train_file", str(SHARED / "corpora" / "tinyshakespeare.txt"), "--streaming"]
# A checkpoint at step 10 right after an evaluation: the evaluation loader is saved after its full pass.
STREAMED_VALIDATED = [*STREAMED, "--validation_file", str(ROOT / "data" / "default_corpus.txt")]
LAUNCH_2 = [
    "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
    "--mixed_precision", "no", "--dynamo_backend", "no",
]  # fmt: skip


def environment() -> dict:
    env = os.environ.copy()
    env["OMP_NUM_THREADS"] = "1"  # the thread count changes float results: every run of a comparison uses one
    env["PYTHONPATH"] = str(ROOT)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(args: list[str], processes: int = 1) -> subprocess.Popen:
    # A port of its own for each 2-process run: a killed run's port may still be held when the next one starts.
    launcher = [*LAUNCH_2, "--main_process_port", str(free_port())] if processes == 2 else []
    return subprocess.Popen(
        [sys.executable, *launcher, SCRIPT, *args],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def train(args: list[str], processes: int = 1) -> str:
    process = start(args, processes)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output


def interrupt(args: list[str], output_dir: Path, at_checkpoint: int, how: int, processes: int = 1) -> int:
    """Start a run and send it `how` (SIGKILL or SIGTERM) as soon as checkpoint `at_checkpoint` exists."""
    process = start([*args, "--output_dir", str(output_dir)], processes)
    deadline = time.time() + 240
    while not (output_dir / f"step_{at_checkpoint}").is_dir():
        assert process.poll() is None and time.time() < deadline, process.communicate()[0][-3000:]
        time.sleep(0.005)
    if how == signal.SIGKILL:  # the launcher and every rank (torchrun puts ranks in sessions of their own)
        for victim in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
            victim.kill()
    else:
        process.send_signal(how)  # to the training process itself, as a cluster's scheduler would
    process.communicate(timeout=120)
    assert not (output_dir / "model.safetensors").exists() or how == signal.SIGTERM, "the run ended before the kill"
    return process.returncode


def losses(output_dir: Path) -> list[tuple]:
    log = [json.loads(line) for line in (output_dir / "training_log.jsonl").read_text().splitlines()]
    return [(e["step"], e["tokens_seen"], e["train_loss"], e["lr"]) for e in log]


def assert_same_training(resumed: Path, uninterrupted: Path) -> None:
    expected, actual = load_file(uninterrupted / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    assert losses(resumed) == losses(uninterrupted)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Reference runs, never interrupted, trained once and shared by the tests that compare against them."""
    cache = {}

    def get(name: str, args: list[str], processes: int = 1) -> Path:
        if name not in cache:
            cache[name] = tmp_path_factory.mktemp(name)
            train([*args, "--output_dir", str(cache[name])], processes)
        return cache[name]

    return get


# --- learning, and the output folder ------------------------------------------------------------------------------


def test_loss_falls_and_the_folder_loads_as_a_hub_user_would(tmp_path):
    out = tmp_path / "out"
    args = [*TINY, "--max_train_steps", "60", "--learning_rate", "3e-3", "--eval_steps", "20"]
    printed = train([*args, "--output_dir", str(out)])
    assert "step 20: train loss" in printed and "Every effort moves you" in printed  # the seed's periodic sample

    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 61))
    assert log[-1]["tokens_seen"] == 60 * 4 * 32
    evaluated = [e for e in log if "val_loss" in e]
    assert [e["step"] for e in evaluated] == [20, 40, 60]
    assert log[-1]["train_loss"] < log[0]["train_loss"] - 2.0
    assert evaluated[-1]["val_loss"] < evaluated[0]["val_loss"]
    assert evaluated[-1]["perplexity"] == pytest.approx(2.718281828 ** evaluated[-1]["val_loss"], rel=1e-6)
    assert (out / "loss.png").stat().st_size > 0 and (out / "README.md").is_file()

    model = GPT2EduForCausalLM.from_pretrained(out).eval()
    expected_ids = [15496, 11, 995]  # "Hello, world" in tiktoken's gpt2 encoding
    with torch.no_grad():
        torch.save(model(torch.tensor([expected_ids])).logits, tmp_path / "expected.pt")
    script = f"""
import sys
sys.modules.update({{name: None for name in ["modeling_gpt2edu", "configuration_gpt2edu", "tokenization_gpt2edu",
                                             "train_accelerate", "convert_checkpoint"]}})
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained({str(out)!r}, trust_remote_code=True)
ids = tokenizer("Hello, world").input_ids
assert ids == {expected_ids}, ids
with torch.no_grad():
    torch.testing.assert_close(model(torch.tensor([ids])).logits, torch.load("expected.pt"))
print("loaded", type(model).__module__)
"""
    env = {k: v for k, v in environment().items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded transformers_modules." in result.stdout


def test_two_processes_train_on_both_and_count_tokens_from_both(uninterrupted):
    one = losses(uninterrupted("map", RESUMABLE))
    two = losses(uninterrupted("map-2proc", RESUMABLE, processes=2))
    assert [tokens for _, tokens, _, _ in two] == [2 * tokens for _, tokens, _, _ in one]
    assert [loss for _, _, loss, _ in two] != [loss for _, _, loss, _ in one]  # twice the data per step


# --- resuming exactly ---------------------------------------------------------------------------------------------


def test_kill_9_and_resume_twice_equals_an_uninterrupted_run(tmp_path, uninterrupted):
    out = tmp_path / "run"
    interrupt(RESUMABLE, out, at_checkpoint=5, how=signal.SIGKILL)
    interrupt([*RESUMABLE, "--resume_from_checkpoint", "latest"], out, at_checkpoint=15, how=signal.SIGKILL)
    printed = train([*RESUMABLE, "--output_dir", str(out), "--resume_from_checkpoint", "latest"])
    assert "Resuming from" in printed
    assert not list(out.glob("*.tmp"))
    assert_same_training(out, uninterrupted("map", RESUMABLE))


def test_kill_9_and_resume_a_stream(tmp_path, uninterrupted):
    out = tmp_path / "run"
    interrupt(STREAMED, out, at_checkpoint=5, how=signal.SIGKILL)
    train([*STREAMED, "--output_dir", str(out), "--resume_from_checkpoint", "latest"])
    assert_same_training(out, uninterrupted("stream", STREAMED))


def test_kill_9_after_an_evaluation_and_resume_a_stream_with_a_validation_file(tmp_path, uninterrupted):
    out = tmp_path / "run"
    interrupt(STREAMED_VALIDATED, out, at_checkpoint=10, how=signal.SIGKILL)
    printed = train([*STREAMED_VALIDATED, "--output_dir", str(out), "--resume_from_checkpoint", "latest"])
    assert "step 20: train loss" in printed  # evaluated after the resume: the loader was not restored as exhausted
    assert_same_training(out, uninterrupted("stream-validated", STREAMED_VALIDATED))
    val_losses = [json.loads(line).get("val_loss") for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert len([loss for loss in val_losses if loss is not None]) == 3


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT (Ctrl-C)"])
def test_a_signal_saves_a_checkpoint_and_the_model_and_resumes_exactly(tmp_path, uninterrupted, how):
    out = tmp_path / "run"
    process = start([*RESUMABLE, "--output_dir", str(out)])
    deadline = time.time() + 240
    while not (out / "step_5").is_dir():
        assert process.poll() is None and time.time() < deadline, process.communicate()[0][-3000:]
        time.sleep(0.005)
    process.send_signal(how)
    printed, _ = process.communicate(timeout=120)
    assert process.returncode == 0, printed[-3000:]
    assert "Traceback" not in printed and "KeyboardInterrupt" not in printed
    assert f"{how.name}: stopped at step" in printed and "--resume_from_checkpoint latest" in printed
    stopped_at = max(int(p.name[5:]) for p in out.glob("step_*"))
    assert 5 < stopped_at < 30  # a checkpoint at the step where the signal arrived, not only the periodic ones
    assert (out / "model.safetensors").is_file()  # the model so far is saved too
    assert [step for step, *_ in losses(out)] == list(range(1, stopped_at + 1))  # the log is whole
    train([*RESUMABLE, "--output_dir", str(out), "--resume_from_checkpoint", "latest"])
    assert_same_training(out, uninterrupted("map", RESUMABLE))


@pytest.mark.parametrize("data", [RESUMABLE, STREAMED], ids=["map-style", "streamed"])
def test_two_processes_kill_9_and_resume(tmp_path, uninterrupted, data):
    out = tmp_path / "run"
    interrupt(data, out, at_checkpoint=10, how=signal.SIGKILL, processes=2)
    train([*data, "--output_dir", str(out), "--resume_from_checkpoint", "latest"], processes=2)
    name = "map-2proc" if data is RESUMABLE else "stream-2proc"
    assert_same_training(out, uninterrupted(name, data, processes=2))


# --- streaming memory ---------------------------------------------------------------------------------------------

MEMORY_PROBE = """
import sys
import train_accelerate
args = train_accelerate.parse_args(["--train_file", sys.argv[1], "--streaming", "--block_size", "128",
                                    "--per_device_eval_batch_size", "1", "--eval_iters", "1"])
raw, documents = train_accelerate.load_raw_datasets(args)
train, _ = train_accelerate.build_datasets(args, raw, documents, 128)
blocks = sum(1 for _ in train)
# VmHWM, not ru_maxrss: ru_maxrss starts at the parent's peak (pytest's, with torch loaded), VmHWM at this process's
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(blocks, peak_kb // 1024)
"""


def test_streaming_memory_stays_flat_as_the_corpus_grows(tmp_path):
    paragraph = (SHARED / "corpora" / "tinyshakespeare.txt").read_text()[:200_000]
    results = {}
    for copies in (5, 50):  # about 1 MB and 10 MB of text
        corpus = tmp_path / f"corpus{copies}.txt"
        corpus.write_text(paragraph * copies)
        result = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(corpus)], env=environment(), capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-3000:]
        blocks, peak_mb = map(int, result.stdout.split()[-2:])
        results[copies] = (blocks, peak_mb)
    (small_blocks, small_peak), (large_blocks, large_peak) = results[5], results[50]
    assert large_blocks > 9 * small_blocks  # the whole of both corpora went through the pipeline
    assert large_peak - small_peak < 50, results  # ten times the data, (nearly) the same peak memory


# --- tokenizing a text file -------------------------------------------------------------------------------------

TRICKY_LINES = [
    "Plain line.\n", "trailing spaces   \n", "   leading spaces\n", "\n", "\n", "after two blank lines\n",
    "tab\tend\t\n", "CRLF line\r\n", "next\n", "don't\n", "'s at the start\n", "42\n", "123456 digits\n",
    "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e\n", "\U0001f389 emoji\n", "!!!\n", "?\n", " \n", "x\n",
    "no final newline",
]  # fmt: skip


@pytest.mark.parametrize("n_pieces", [2, 3, 8, 1000])
def test_running_text_pieces_encode_exactly_like_the_whole_text(n_pieces):
    encoding = train_accelerate.tiktoken_encoding()
    lines = (ROOT / "data" / "default_corpus.txt").read_text().splitlines(keepends=True)[:300] + TRICKY_LINES * 20
    pieces = train_accelerate.running_text_pieces(lines, n_pieces)
    assert "".join(pieces) == "".join(lines)
    assert len(pieces) > 1  # otherwise there is nothing to check
    ids = [token for piece in encoding.encode_ordinary_batch(pieces) for token in piece]
    assert ids == encoding.encode_ordinary("".join(lines))


def test_streamed_blocks_are_tiktokens_encoding_of_the_file_cut_in_blocks(tmp_path):
    text = (ROOT / "data" / "default_corpus.txt").read_text() + "".join(TRICKY_LINES * 20)
    (tmp_path / "corpus.txt").write_text(text)
    block_size = 64
    args = train_accelerate.parse_args(
        ["--train_file", str(tmp_path / "corpus.txt"), "--streaming", "--max_train_steps", "1",
         "--block_size", str(block_size), "--eval_iters", "2", "--per_device_eval_batch_size", "3"]
    )  # fmt: skip
    raw, documents = train_accelerate.load_raw_datasets(args)
    train, validation = train_accelerate.build_datasets(args, raw, documents, block_size)
    blocks = [row["input_ids"] for row in validation] + [row["input_ids"] for row in train]
    assert len(blocks[0]) == block_size and len(blocks) > 100
    # The file is one batch of lines, read as Python reads text files: "\r\n" becomes "\n".
    expected = train_accelerate.tiktoken_encoding().encode_ordinary((tmp_path / "corpus.txt").read_text())
    assert [token for block in blocks for token in block] == expected[: len(blocks) * block_size]
    assert len(expected) - len(blocks) * block_size < block_size  # only the last partial block is dropped


# --- the seed's library API ---------------------------------------------------------------------------------------


def test_library_train_returns_the_seeds_histories(tmp_path):
    text = (ROOT / "data" / "default_corpus.txt").read_text()[:20_000]
    config = dict(emb_dim=32, n_heads=2, n_layers=2, context_length=32, drop_rate=0.0)
    train_losses, val_losses, tokens_seen, model = train_accelerate.train(
        text, num_epochs=1, batch_size=4, learning_rate=3e-3, eval_freq=5, config=config, output_dir=str(tmp_path)
    )
    assert isinstance(model, GPT2EduForCausalLM) and model.config.emb_dim == 32
    assert len(train_losses) == len(val_losses) == len(tokens_seen) >= 3
    # The seed's loop evaluates after its first batch (global_step 0), then every eval_freq steps.
    assert tokens_seen == sorted(tokens_seen) and tokens_seen[0] == 4 * 32 and tokens_seen[1] == 6 * 4 * 32
    assert train_losses[-1] < train_losses[0]
    assert (tmp_path / "model.safetensors").is_file()


# --- bad input ----------------------------------------------------------------------------------------------------


def run_main(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = train_accelerate.main(args)
    except SystemExit as exit:  # argparse's errors
        code = exit.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train_file", "{tmp}/missing.txt"], "does not exist"),
        (["--train_file", "{tmp}/empty.txt"], "is empty"),
        (["--train_file", "{tmp}/short.txt"], "block_size + 1"),
        (["--block_size", "64"], "larger than the model's context"),
        (["--config_overrides", "emb_dim=32,n_heads=2,n_layerz=2"], "n_layerz"),
        (["--config_overrides", "emb_dim=30,n_heads=4"], "emb_dim (30) must be divisible by n_heads (4)"),
        (["--config_overrides", "drop_rate=lots"], "drop_rate='lots'"),
        (["--learning_rate", "0"], "--learning_rate must be positive"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be a positive"),
        (["--max_train_steps", "-1"], "--max_train_steps must be a positive"),
        (["--resume_from_checkpoint", "latest"], "no checkpoint"),
        (["--streaming"], "--streaming needs --max_train_steps"),
    ],
)
def test_bad_input_is_one_clear_line_and_nothing_is_written(tmp_path, capsys, args, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("Just a few words.")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("a previous good output")
    base = ["--config_overrides", "emb_dim=32,n_heads=2,n_layers=2,context_length=32", "--output_dir", str(out),
            "--overwrite_output_dir"]  # fmt: skip
    code, err = run_main([*base, *[arg.format(tmp=tmp_path) for arg in args]], capsys)
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err and ": error: " in err.strip().splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    assert (out / "model.safetensors").read_text() == "a previous good output"


def test_no_corpus_at_all_is_a_clear_error(tmp_path, capsys, monkeypatch):
    # As after a wheel install: train_accelerate.py with no data/ folder beside it.
    monkeypatch.setattr(train_accelerate, "DEFAULT_CORPUS", tmp_path / "data" / "default_corpus.txt")
    code, err = run_main(["--output_dir", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "the default corpus" in err and "pass --train_file or --dataset_name" in err
    assert "Traceback" not in err and ": error: " in err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_of_another_shape_is_refused(tmp_path, capsys, uninterrupted):
    checkpoint = uninterrupted("map", RESUMABLE) / "step_5"
    code, err = run_main(
        ["--config_overrides", "emb_dim=64,n_heads=2,n_layers=2,context_length=32", "--resume_from_checkpoint",
         str(checkpoint), "--output_dir", str(tmp_path / "out")], capsys,
    )  # fmt: skip
    assert code == 2
    assert "is from a different model" in err and "(32,) there and (64,) here" in err
    assert not (tmp_path / "out").exists()


# --- the saved tokenizer, the model card and the push -------------------------------------------------------------


class FakeHubApi:
    """huggingface_hub's HfApi at the network edge: records the files upload_folder would send (by the library's own
    pattern filter) instead of sending them."""

    uploads: dict[str, list[str]] = {}

    def create_repo(self, repo_id: str, private: bool = False, exist_ok: bool = False) -> str:
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, ignore_patterns=None, **kwargs) -> None:
        paths = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
        self.uploads[repo_id] = sorted(filter_repo_objects(paths, ignore_patterns=ignore_patterns))


def main_in_process(args: list[str]) -> str:
    """train_accelerate.main in this process (so that the Hub can be faked); returns what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert train_accelerate.main(args) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A 2-step run with a checkpoint at each step, pushed to a fake Hub: (output folder, printed, files uploaded)."""
    out = tmp_path_factory.mktemp("pushed") / "out"
    args = [*TINY, "--max_train_steps", "2", "--checkpointing_steps", "1", "--output_dir", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("gpt2edu.hub.HfApi", FakeHubApi)
        printed = main_in_process([*args, "--push_to_hub", "--hub_model_id", "someone/tiny"])
    return out, printed, FakeHubApi.uploads.get("someone/tiny")


def test_the_saved_tokenizer_takes_as_many_tokens_as_the_model(pushed):
    out, _, _ = pushed
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 32  # TINY's context_length
    assert AutoTokenizer.from_pretrained(out).model_max_length == 32


def test_push_to_hub_uploads_the_model_folder_but_not_its_checkpoints(pushed):
    out, printed, uploaded = pushed
    assert "Pushed to https://huggingface.co/someone/tiny" in printed
    assert sorted(p.name for p in out.glob("step_*")) == ["step_1", "step_2"]
    assert uploaded is not None and not [path for path in uploaded if "/" in path]
    expected = {"model.safetensors", "config.json", "tokenizer.json", "README.md", "training_log.jsonl", "loss.png"}
    assert expected <= set(uploaded)
    card = (out / "README.md").read_text()
    assert 'from_pretrained("someone/tiny", trust_remote_code=True)' in card
    assert "trained from scratch on the gpt2edu default corpus" in card and "2 steps, 256 tokens" in card


def test_config_overrides_take_the_types_of_the_configs_defaults():
    config = train_args.new_model_config(" emb_dim=64, n_heads = 2,,qkv_bias=true,drop_rate=0,tie_word_embeddings=1,")
    assert (config.emb_dim, config.n_heads, config.qkv_bias, config.tie_word_embeddings) == (64, 2, True, True)
    assert config.drop_rate == 0.0 and isinstance(config.drop_rate, float)
    assert config.n_layers == 12 and config.context_length == 1024  # the rest is GPT-2 124M's
    assert train_args.new_model_config("").to_dict() == GPT2EduConfig().to_dict()
    refused = {
        "model_type=llama": "unknown or malformed 'model_type=llama'",  # an attribute, but not a setting of the model
        "output_attentions=true": "unknown or malformed 'output_attentions=true'",
        "emb_dim": "unknown or malformed 'emb_dim'",
        "emb_dim=3.5": "emb_dim='3.5' is not a valid int",
        "qkv_bias=maybe": "qkv_bias='maybe' is not a valid bool",
        "n_heads=5": "emb_dim (768) must be divisible by n_heads (5)",
    }
    for overrides, message in refused.items():
        with pytest.raises(UsageError) as error:
            train_args.new_model_config(overrides)
        assert message in str(error.value) and str(error.value).startswith("--config_overrides: ")


def test_a_launch_config_that_cannot_run_here_says_what_runs_instead(tmp_path):
    """configs/fsdp.yaml on CPU processes: Accelerate trains unsharded, and fp16 on a CPU is float32; both said."""
    tiny = ["--config_overrides", "emb_dim=32,n_heads=2,n_layers=2,context_length=32", "--max_train_steps", "2"]
    command = [
        str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(ROOT / "configs/fsdp.yaml"),
        "--num_processes", "1", str(ROOT / "train_accelerate.py"), *tiny, "--eval_steps", "2", "--eval_iters", "1",
        "--mixed_precision", "fp16", "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2, result.stdout
    assert "asks for FSDP" in notes[0] and "the whole model on one process" in notes[0]
    assert "fp16" in notes[1] and "float32" in notes[1]
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_a_failed_push_is_one_line_and_keeps_the_model(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from gpt2edu import hub

    class UnreachableHubApi(huggingface_hub.HfApi):
        def create_repo(self, *args, **kwargs):
            raise ConnectionError("Connection refused\nmore detail")

    monkeypatch.setattr(hub, "HfApi", UnreachableHubApi)
    out = tmp_path / "out"
    tiny = ["--config_overrides", "emb_dim=32,n_heads=2,n_layers=2,context_length=32", "--max_train_steps", "2"]
    code = train_accelerate.main([*tiny, "--eval_steps", "2", "--eval_iters", "1", "--push_to_hub",
                                  "--hub_model_id", "someone/model", "--output_dir", str(out)])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert code == 2 and len(err) == 1 and "push to someone/model failed (Connection refused)" in err[0], err
    assert (out / "model.safetensors").is_file()

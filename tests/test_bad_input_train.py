"""train_accelerate.py on bad input: one line on stderr, exit code 2, and nothing good on disk damaged or replaced."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train_accelerate

TINY = [
    "--config_overrides", "emb_dim=32,n_heads=2,n_layers=2,context_length=32", "--per_device_train_batch_size", "4",
    "--per_device_eval_batch_size", "4", "--eval_iters", "2", "--eval_steps", "10", "--logging_steps", "1",
    "--seed", "7",
]  # fmt: skip
SHORT = [*TINY, "--max_train_steps", "5"]
PROGRESS = re.compile(r"\[\d\d:\d\d")  # tqdm's "[00:01<00:02, ...]": progress bars, not messages


def run_main(args: list[str], capsys) -> tuple[int, list[str]]:
    """train_accelerate.main in this process; returns the exit code and stderr's lines that are not progress bars."""
    try:
        code = train_accelerate.main(args)
    except SystemExit as exit:  # argparse's errors
        code = exit.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.search(line)]
    return code, lines


def snapshot(folder: Path) -> dict:
    """Every file under folder with its bytes: what must be left exactly as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(code: int, lines: list[str], message: str) -> None:
    assert code == 2
    assert len(lines) == 1, lines
    assert ": error: " in lines[0] and message in lines[0], lines


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished short run with a checkpoint at step 5 (and a model), to damage copies of."""
    out = tmp_path_factory.mktemp("trained") / "out"
    assert train_accelerate.main([*SHORT, "--checkpointing_steps", "5", "--output_dir", str(out)]) == 0
    return out


# --- refused before anything is read or written -------------------------------------------------------------------


def write_files(tmp: Path) -> None:
    (tmp / "latin1.txt").write_bytes("First line.\nUn caf\u00e9 cr\u00e8me.\n".encode("latin-1"))
    (tmp / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (tmp / "malformed.jsonl").write_text('{"text": "fine"}\n{"text": "oops\n{"text": "fine"}\n')
    (tmp / "ints.jsonl").write_text("".join(json.dumps({"text": i}) + "\n" for i in range(50)))
    (tmp / "lists.jsonl").write_text("".join(json.dumps({"text": ["a", "b"]}) + "\n" for _ in range(50)))
    (tmp / "small.txt").write_text("A few words, enough for a block or two of eight tokens, not a batch.\n" * 3)
    (tmp / "a_file").write_text("not a folder")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--learning_rate", "inf"], "--learning_rate must be a finite number, got inf"),
        (["--weight_decay", "nan"], "--weight_decay must be a finite number, got nan"),
        (["--max_grad_norm", "nan"], "--max_grad_norm must be a finite number, got nan"),
        (["--block_size", "1"], "--block_size must be at least 2"),
        (["--seed", "-1"], "--seed must be in 0..4294967295, got -1"),
        (["--sample_prompt", ""], "--sample_prompt must not be empty"),
        (["--sample_prompt", " ".join(["word"] * 40)], "is 40 tokens, the model's whole context is 32"),
        (["--config_overrides", "vocab_size=100,emb_dim=32,n_heads=2,n_layers=2"], "GPT-2 tokenizer has 50257"),
        (["--output_dir", ""], "--output_dir must not be empty"),
        (["--output_dir", "{tmp}/a_file"], "is a file, not a folder"),
        (["--output_dir", "{tmp}/a_file/out"], "cannot be created or written"),
        (["--with_tracking", "--report_to", "bogus"], "--report_to 'bogus' is not a tracker Accelerate knows"),
        (["--model_name_or_path", "{tmp}/missing"], "--model_name_or_path '{tmp}/missing': no such folder"),
        (["--train_file", "{tmp}/latin1.txt"], "is not UTF-8 text: byte 0xe9 at line 2 (byte 18)"),
        (["--train_file", "{tmp}/binary.txt"], "is not UTF-8 text: byte 0x80 at line 2 (byte 128)"),
        (["--train_file", "{tmp}/malformed.jsonl"], "line 2 is not valid JSON"),
        (["--train_file", "{tmp}/ints.jsonl"], "the 'text' column holds int64, not text"),
        (["--train_file", "{tmp}/lists.jsonl"], "the 'text' column holds list<item: string>, not text"),
        (
            ["--train_file", "{tmp}/small.txt", "--block_size", "8", "--validation_split_percentage", "50"],
            "less than one batch of --per_device_train_batch_size 4",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value)[:40],
)
def test_refused_with_one_line_and_nothing_written(tmp_path, capsys, args, message):
    write_files(tmp_path)
    out = tmp_path / "out"
    args, message = [arg.format(tmp=tmp_path) for arg in args], message.format(tmp=tmp_path)
    # --config_overrides (TINY's first flag) builds a new model: not with a model to start from
    base = TINY[2:] if "--model_name_or_path" in args else TINY
    if "--output_dir" not in args:
        args += ["--output_dir", str(out)]
    code, lines = run_main([*base, "--max_train_steps", "3", *args], capsys)
    assert_one_line_error(code, lines, message)
    assert not out.exists()
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_a_model_with_truncated_weights_is_refused(tmp_path, capsys, trained):
    source = tmp_path / "model"
    shutil.copytree(trained, source, ignore=shutil.ignore_patterns("step_*"))
    weights = source / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, lines = run_main(["--model_name_or_path", str(source), "--output_dir", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, lines, f"cannot load --model_name_or_path {str(source)!r}")
    assert not (tmp_path / "out").exists()


# --- earlier runs in the output folder ----------------------------------------------------------------------------


def test_an_earlier_run_is_not_clobbered_without_overwrite_output_dir(tmp_path, capsys, trained):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    before = snapshot(out)
    code, lines = run_main([*SHORT, "--output_dir", str(out)], capsys)
    assert_one_line_error(code, lines, "already holds an earlier run")
    assert "--overwrite_output_dir" in lines[0] and "--resume_from_checkpoint latest" in lines[0]
    assert snapshot(out) == before  # the log is not truncated and the model not replaced

    assert run_main([*SHORT, "--seed", "8", "--output_dir", str(out), "--overwrite_output_dir"], capsys)[0] == 0
    assert not list(out.glob("step_*"))  # the earlier run's checkpoints would be resumed by mistake
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"]
    assert [json.loads(line)["step"] for line in (out / "training_log.jsonl").read_text().splitlines()] == [
        1, 2, 3, 4, 5
    ]  # fmt: skip


def test_never_train_into_the_folder_being_fine_tuned(tmp_path, capsys, trained):
    source = tmp_path / "model"
    shutil.copytree(trained, source, ignore=shutil.ignore_patterns("step_*"))
    before = snapshot(source)
    code, lines = run_main(
        ["--model_name_or_path", str(source), "--output_dir", str(source), "--overwrite_output_dir"], capsys
    )
    assert_one_line_error(code, lines, "is the folder --model_name_or_path reads from")
    assert snapshot(source) == before


def test_stale_staging_folders_are_cleaned_and_the_model_kept(tmp_path, capsys, trained):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    (out / ".final-x1y2").mkdir()  # as a kill -9 during the final save leaves it
    (out / ".final-x1y2" / "model.safetensors").write_bytes(b"half")
    (out / "step_6.tmp").mkdir()
    model = (out / "model.safetensors").read_bytes()
    # Resuming at the last step: the loop has nothing to do, and the model is saved again, identical.
    assert run_main([*SHORT, "--output_dir", str(out), "--resume_from_checkpoint", "latest"], capsys)[0] == 0
    assert not list(out.glob(".final-*")) and not list(out.glob("*.tmp"))
    assert (out / "model.safetensors").read_bytes() == model


def test_saved_files_get_ordinary_permissions(trained):
    umask = os.umask(0)
    os.umask(umask)
    for path in [*trained.glob("*"), *trained.glob("step_5/*")]:
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


# --- damaged checkpoints ------------------------------------------------------------------------------------------


class RunsCode:
    """A pickle that would create a file when loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def damage(checkpoint: Path, how: str, marker: Path) -> None:
    if how == "no random_states_0.pkl":
        (checkpoint / "random_states_0.pkl").unlink()
    elif how == "no optimizer.bin":
        (checkpoint / "optimizer.bin").unlink()
    elif how == "truncated model.safetensors":
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "corrupt trainer_state.json":
        (checkpoint / "trainer_state.json").write_text('{"step": 5, "epo')
    elif how == "corrupt optimizer.bin":
        (checkpoint / "optimizer.bin").write_bytes(b"\0garbage" * 100)
    elif how == "random_states_0.pkl runs code":
        torch.save({"random_state": RunsCode(str(marker))}, checkpoint / "random_states_0.pkl")
    elif how.endswith(" runs code"):
        torch.save(RunsCode(str(marker)), checkpoint / how.split()[0])


@pytest.mark.parametrize(
    "how, message",
    [
        ("no random_states_0.pkl", "is incomplete (no random_states_0.pkl)"),
        ("no optimizer.bin", "is incomplete (no optimizer.bin)"),
        ("truncated model.safetensors", "model.safetensors is damaged"),
        ("corrupt trainer_state.json", "trainer_state.json is damaged"),
        ("corrupt optimizer.bin", "cannot be restored"),
        ("random_states_0.pkl runs code", "random_states_0.pkl cannot be loaded safely"),
        ("scheduler.bin runs code", "scheduler.bin cannot be loaded safely"),
        ("optimizer.bin runs code", "cannot be restored (Weights only load failed"),
        ("dl_state_dict.bin runs code", "cannot be restored (Weights only load failed"),
    ],
)
def test_a_damaged_checkpoint_is_refused_not_half_restored(tmp_path, capsys, trained, how, message):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    marker = tmp_path / "code-ran"
    damage(out / "step_5", how, marker)
    before = snapshot(out)
    code, lines = run_main([*SHORT, "--max_train_steps", "8", "--output_dir", str(out), "--resume_from_checkpoint",
                            "latest"], capsys)  # fmt: skip
    assert_one_line_error(code, lines, message)
    assert "resume from another step_N folder" in lines[0]
    assert snapshot(out) == before
    assert not marker.exists()


# --- training that diverges ---------------------------------------------------------------------------------------


def test_a_diverging_run_stops_and_saves_no_nan_model(tmp_path, capsys):
    out = tmp_path / "out"
    args = [*TINY, "--max_train_steps", "10", "--checkpointing_steps", "1", "--learning_rate", "1e30"]
    code, lines = run_main([*args, "--output_dir", str(out)], capsys)
    assert_one_line_error(code, lines, "training diverged at step")
    assert "Lower --learning_rate (now 1e+30)" in lines[0]
    assert not (out / "model.safetensors").exists()
    for checkpoint in out.glob("step_*"):  # the checkpoints kept hold numbers
        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert all(entry["train_loss"] == entry["train_loss"] for entry in log)  # no NaN logged


# --- a full disk --------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a given size, mounted under tmp_path (needs root and a machine that allows mounting)."""
    mounted = []

    def mount(megabytes: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={megabytes}M", "tmpfs", str(point)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here to fill: {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, capsys, small_disk):
    out = small_disk(60) / "out"  # one checkpoint (about 39 MB with its optimizer state) fits, not two
    code, lines = run_main([*TINY, "--max_train_steps", "10", "--checkpointing_steps", "2", "--output_dir",
                            str(out)], capsys)  # fmt: skip
    assert_one_line_error(code, lines, "no space left on device while saving checkpoint")
    assert sorted(p.name for p in out.glob("step_*")) == ["step_2"]
    assert not list(out.glob("*.tmp"))
    assert load_file(out / "step_2" / "model.safetensors")  # whole and readable


def test_a_full_disk_while_saving_the_model_keeps_the_previous_model(tmp_path, capsys, small_disk, trained):
    out = small_disk(22) / "out"  # the earlier model (13 MB) fits, not a second one beside it
    out.mkdir()
    for name in ("model.safetensors", "config.json", "training_log.jsonl"):
        shutil.copy(trained / name, out / name)
    before = snapshot(out)
    code, lines = run_main([*SHORT, "--output_dir", str(out), "--overwrite_output_dir"], capsys)
    assert_one_line_error(code, lines, "no space left on device while saving the model")
    assert snapshot(out)["model.safetensors"] == before["model.safetensors"]
    assert not list(out.glob(".final-*"))


# --- output folders that cannot be created ------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self").is_dir() or not Path("/sys/kernel").is_dir(), reason="Linux /proc, /sys")
@pytest.mark.parametrize("output_dir", ["/proc/gpt2edu-out", "/proc/gpt2edu-out/deeper", "/sys/x"])
def test_an_output_dir_under_proc_or_sys_is_one_line_and_nothing_written(capsys, output_dir):
    code, lines = run_main([*TINY, "--max_train_steps", "3", "--output_dir", output_dir], capsys)
    assert_one_line_error(code, lines, f"--output_dir {output_dir!r} cannot be created or written")
    assert not os.path.exists(output_dir)


def test_an_output_dir_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short path: the whole message fits its line
    code, lines = run_main([*TINY, "--max_train_steps", "3", "--output_dir", "x" * 300], capsys)
    assert_one_line_error(code, lines, "cannot be created or written (File name too long)")
    assert list(tmp_path.iterdir()) == []

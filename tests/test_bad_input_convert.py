"""convert_checkpoint.py under bad input and faults: one line, a non-zero exit, nothing written, nothing lost.

Each case is one the reliability review found converting silently or dying with a traceback.
"""

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from seed_reference import SeedConfig, seed_model

import gpt2edu.convert_outputs
from convert_checkpoint import main


def seed_state_dict() -> dict[str, torch.Tensor]:
    return seed_model().state_dict()


def with_tensor(name: str, change):
    def make(state_dict):
        state_dict = dict(state_dict)
        state_dict[name] = change(state_dict[name].clone())
        return state_dict

    return make


def one_nan(tensor):
    tensor[3] = float("nan")
    return tensor


@pytest.mark.parametrize(
    "make_bad, args, message",
    [
        (with_tensor("out_head.weight", lambda t: t.fill_(float("nan"))), [], "out_head.weight holds 3232 NaN"),
        (with_tensor("trf_blocks.0.norm1.scale", one_nan), [], "trf_blocks.0.norm1.scale holds 1 NaN or infinite"),
        (with_tensor("tok_emb.weight", lambda t: t.fill_(float("inf"))), [], "tok_emb.weight holds 3232 NaN or inf"),
        (
            with_tensor("trf_blocks.1.ff.layers.0.weight", lambda t: t * 1e6),
            ["--dtype", "float16"],
            "--dtype float16 cannot hold these weights: model.trf_blocks.1.ff.layers.0.weight",
        ),
        (lambda sd: {name: t.long() for name, t in sd.items()}, [], "holds int64 values, not floating point"),
    ],
    ids=["nan_head", "one_nan_in_a_norm", "inf_embedding", "float16_overflow", "int64"],
)
def test_weights_that_are_not_usable_are_refused(tmp_path, capsys, make_bad, args, message):
    torch.save(make_bad(seed_state_dict()), tmp_path / "model.pth")
    assert main([str(tmp_path / "model.pth"), str(tmp_path / "out"), "--n-heads", "4", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and len(lines[0]) < 450, lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_a_config_that_disagrees_with_the_tensors_is_refused_before_building(tmp_path, capsys):
    """n_layers=200000 with 2 blocks of tensors: once minutes and gigabytes before the error; now at once."""
    fields = dataclasses.asdict(SeedConfig()) | {"n_layers": 200_000}
    torch.save({"model_state_dict": seed_state_dict(), "config": fields}, tmp_path / "model.pth")
    assert main([str(tmp_path / "model.pth"), str(tmp_path / "out")]) == 2
    assert "config says n_layers=200000, but its tensors have n_layers=2" in capsys.readouterr().err


def test_a_folder_whose_config_disagrees_with_its_weights_is_refused(tmp_path, capsys):
    assert main([str(write_seed(tmp_path)), str(tmp_path / "hf"), "--n-heads", "4"]) == 0
    config = (tmp_path / "hf" / "config.json").read_text().replace('"n_layers": 2', '"n_layers": 20000')
    (tmp_path / "hf" / "config.json").write_text(config)
    capsys.readouterr()
    assert main([str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    assert "config.json says 20000 layers, its weights hold 2 blocks" in capsys.readouterr().err


def write_seed(tmp_path: Path) -> Path:
    torch.save(seed_state_dict(), tmp_path / "model.pth")
    return tmp_path / "model.pth"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "incomplete metadata"),
        (lambda data: b"\xff" * 8 + b"{}", "header too large"),
        (lambda data: (4).to_bytes(8, "little") + b"{}", "cannot read"),
    ],
    ids=["truncated", "header_too_large", "header_too_small"],
)
def test_a_damaged_safetensors_in_a_source_folder_is_one_line(tmp_path, capsys, damage, message):
    assert main([str(write_seed(tmp_path)), str(tmp_path / "hf"), "--n-heads", "4"]) == 0
    weights = tmp_path / "hf" / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    capsys.readouterr()
    assert main([str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot read" in lines[0] and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("force", [False, True])
def test_ctrl_c_while_writing_leaves_nothing_half_written(tmp_path, capsys, monkeypatch, force):
    src = write_seed(tmp_path)
    if force:
        assert main([str(src), str(tmp_path / "out"), "--n-heads", "4"]) == 0
        before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    # Ctrl-C in the middle of the writing
    monkeypatch.setattr(gpt2edu.convert_outputs, "save_gpt2_tokenizer", interrupt)
    capsys.readouterr()
    args = [str(src), str(tmp_path / "out"), "--n-heads", "4"] + (["--force"] if force else [])
    assert main(args) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "interrupted; nothing was written" in lines[0], lines
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    if force:
        assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    else:
        assert not (tmp_path / "out").exists()


def test_staging_left_by_a_killed_run_is_cleared_and_a_set_aside_model_restored(tmp_path, capsys):
    src = write_seed(tmp_path)
    assert main([str(src), str(tmp_path / "out"), "--n-heads", "4"]) == 0
    good = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    # What kill -9 leaves: a half-written folder, and (killed between the two renames of --force) the old model set
    # aside with nothing at OUT.
    (tmp_path / ".out.partial-1234abcd").mkdir()
    (tmp_path / ".out.partial-1234abcd" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".out.old-5678abcd").mkdir()
    (tmp_path / "out").rename(tmp_path / ".out.old-5678abcd" / "out")
    capsys.readouterr()
    assert main([str(src), str(tmp_path / "out"), "--n-heads", "4"]) == 2  # the restored model is not overwritten
    assert "exists and is not empty" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "out"]


@pytest.fixture
def small_disk(tmp_path):
    """A 10 MB tmpfs: room for one tiny model folder (tokenizer files included, about 6.5 MB), not for two."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to fill a disk ({result.stderr.decode().strip() or 'not root'})")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "convert_checkpoint.py"), *map(str, args)], capture_output=True, text=True
    )


def test_disk_full_for_a_new_folder_is_one_line_and_leaves_nothing(tmp_path, small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 8_000_000)  # leaves about 2 MB: not enough for the folder
    result = run_cli(write_seed(tmp_path), small_disk / "out", "--n-heads", 4)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0], lines
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_disk_full_with_force_keeps_the_old_model(tmp_path, small_disk):
    src = write_seed(tmp_path)
    assert run_cli(src, small_disk / "out", "--n-heads", 4).returncode == 0
    before = {p.name: p.read_bytes() for p in (small_disk / "out").iterdir()}
    result = run_cli(src, small_disk / "out", "--n-heads", 4, "--force")  # a second copy does not fit beside it
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0], lines
    assert {p.name: p.read_bytes() for p in (small_disk / "out").iterdir()} == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["out"]
    shutil.rmtree(small_disk / "out")


def test_written_files_get_ordinary_permissions(tmp_path):
    """Every file of the folder gets the umask's permissions (safetensors alone used to write 0600)."""
    assert main([str(write_seed(tmp_path)), str(tmp_path / "out"), "--n-heads", "4"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, modes
    assert main([str(tmp_path / "out"), str(tmp_path / "back.pth")]) == 0
    assert (tmp_path / "back.pth").stat().st_mode & 0o777 == 0o666 & ~umask


def fill_leaving(disk: Path, free_bytes: int) -> None:
    """Fill `disk` with a file, leaving about `free_bytes` free."""
    (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - free_bytes))


def test_disk_full_while_writing_model_safetensors_is_one_line(tmp_path, small_disk):
    """Room for the staging folder and config.json, not for the weights (about 130 kB): safetensors' own error."""
    fill_leaving(small_disk, 64 * 1024)
    result = run_cli(write_seed(tmp_path), small_disk / "out", "--n-heads", 4)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convert_checkpoint.py: error: no space left"), lines
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_disk_full_while_writing_a_seed_checkpoint_is_one_line(tmp_path, small_disk):
    """torch.save's full disk ("file write failed"), for OUT.pth and its config: one line, nothing left."""
    assert main([str(write_seed(tmp_path)), str(tmp_path / "hf"), "--n-heads", "4"]) == 0
    fill_leaving(small_disk, 64 * 1024)
    result = run_cli(tmp_path / "hf", small_disk / "back.pth")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convert_checkpoint.py: error: no space left"), lines
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


@pytest.mark.parametrize(
    "out", ["/proc/gpt2edu-out", "/sys/gpt2edu-out", "/proc/no-such/gpt2edu-out", "/proc/back.pth"]
)
def test_an_out_that_cannot_be_created_is_one_line_before_any_work(tmp_path, capsys, out):
    if not Path(out).parents[-2].is_dir():
        pytest.skip(f"no {Path(out).parents[-2]} here")
    assert main([str(write_seed(tmp_path)), out, "--n-heads", "4"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "cannot be created or written" in lines[0] and out in lines[0], lines
    assert captured.out == ""  # refused before the source was read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]

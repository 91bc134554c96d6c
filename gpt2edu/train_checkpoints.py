"""Checkpoints of a training run: saved so that a killed save loses nothing, checked before they are trusted.

A checkpoint is the folder Accelerate's `save_state` writes (model, optimizer, scheduler, random and data-loader
states) plus `trainer_state.json` (step, epoch, tokens seen), named step_N in the output folder. It is written as
step_N.tmp and published as step_N only when complete. Resuming from one gives exactly the run that was not
interrupted; a checkpoint that would resume inexactly, or not at all, is refused in one line before anything is
restored.
"""

import json
import pickle
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from accelerate.utils import load as accelerate_load
from safetensors import SafetensorError, safe_open

from .cli import UsageError, first_line
from .files import publish, reporting_full_disk
from .loading import checkpoint_name, checkpoint_names
from .train_guards import no_space

ANOTHER = "resume from another step_N folder"


def save(accelerator: Accelerator, output_dir: str, state: dict) -> None:
    """accelerator.save_state into step_N.tmp, then publish it as step_N: a run killed mid-save leaves step_N-1 whole.

    Every process writes its part of the state into the staging folder, so it has a name they all agree on.
    """
    final = Path(output_dir) / f"step_{state['step']}"
    staging = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        with reporting_full_disk(staging, no_space(f"saving checkpoint {final}")):
            accelerator.save_state(str(staging))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                (staging / "trainer_state.json").write_text(json.dumps(state))
                publish(staging, final)
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()


def find(output_dir: str, which: str) -> Path:
    """Resolve --resume_from_checkpoint: 'latest' is the highest complete step_N folder in output_dir."""
    if which != "latest":
        path = Path(which)
        if not (path / "trainer_state.json").is_file():
            raise UsageError(f"--resume_from_checkpoint {which!r} is not a checkpoint folder (no trainer_state.json)")
        return path
    steps = [
        p for p in Path(output_dir).glob("step_*") if p.name[5:].isdigit() and (p / "trainer_state.json").is_file()
    ]
    if not steps:
        raise UsageError(
            f"--resume_from_checkpoint latest: no checkpoint in {output_dir!r}; "
            "train with --checkpointing_steps N first"
        )
    return max(steps, key=lambda p: int(p.name[5:]))


def check(checkpoint: Path, model: torch.nn.Module, accelerator: Accelerator) -> dict:
    """Refuse a checkpoint that would resume inexactly or not at all; returns its trainer state.

    Accelerate skips a missing random state or loader state with a log line, and the resumed run then differs from
    an uninterrupted one. Accelerate loads the pickles (random states, optimizer, scheduler, loader states) with
    torch.load(weights_only=True), which refuses one that would run code; it only logs that refusal for the random
    states, so those (and the scheduler) are loaded here first, the same way, to turn it into an error. What stays
    trusted is the checkpoint's numbers: a checkpoint written by someone else can hold any weights.
    """
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    needed = ["trainer_state.json"] + [f"random_states_{i}.pkl" for i in range(accelerator.num_processes)]
    if not sharded:
        needed += ["model.safetensors", "optimizer.bin", "scheduler.bin", "dl_state_dict.bin", "dl_state_dict_1.bin"]
    missing = [name for name in needed if not (checkpoint / name).is_file()]
    if missing:
        raise UsageError(
            f"checkpoint {str(checkpoint)!r} is incomplete (no {', '.join(missing)}"
            f"{'; it was written by a run of fewer processes' if 'random_states_1.pkl' in missing else ''}); "
            f"{ANOTHER}"
        )
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        if not all(isinstance(state.get(key), int) and state[key] >= 0 for key in ("step", "epoch", "tokens_seen")):
            raise ValueError("step, epoch or tokens_seen missing")
    except (ValueError, AttributeError, UnicodeDecodeError) as error:
        raise UsageError(
            f"checkpoint {str(checkpoint)!r}: trainer_state.json is damaged ({str(error).splitlines()[0]}); {ANOTHER}"
        ) from None
    for name in needed:
        if name.endswith((".pkl", ".bin")) and name.startswith(("random_states", "scheduler")):
            try:
                accelerate_load(checkpoint / name, map_location="cpu")
            except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
                raise UsageError(
                    f"checkpoint {str(checkpoint)!r}: {name} cannot be loaded safely ({first_line(error)}); {ANOTHER}"
                ) from None
    if not sharded:
        check_fits(checkpoint, model)
    return state


def check_fits(checkpoint: Path, model: torch.nn.Module) -> None:
    """Refuse a checkpoint written for a model of another shape, naming the first tensor that differs."""
    weights = checkpoint / "model.safetensors"
    if not weights.is_file():  # FSDP and DeepSpeed save sharded states: Accelerate checks those itself
        return
    expected = model.state_dict()
    expected |= checkpoint_names(expected)  # a run saved before gpt2edu's head was lm_head named it out_head.weight
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as error:  # a damaged header, or a file shorter than its header says
        raise UsageError(
            f"checkpoint {str(checkpoint)!r}: model.safetensors is damaged ({first_line(error)}); {ANOTHER}"
        ) from None
    for name, shape in sorted(shapes.items(), key=lambda item: checkpoint_name(item[0])):  # the head last, as saved
        if name not in expected or tuple(expected[name].shape) != shape:
            mine = tuple(expected[name].shape) if name in expected else "absent"
            raise UsageError(
                f"checkpoint {str(checkpoint)!r} is from a different model: {name} is {shape} "
                f"there and {mine} here; use the same --config_overrides as the run that wrote it"
            )


def load(accelerator: Accelerator, checkpoint: Path, eval_dataloader) -> None:
    """accelerator.load_state, reporting a state that cannot be restored in one line.

    The evaluation loader is saved after a full pass: restored as such, it would yield nothing. Every evaluation
    starts from the top, so it keeps its fresh state.
    """
    fresh_eval_state = eval_dataloader.state_dict()
    try:
        accelerator.load_state(str(checkpoint))
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
        raise UsageError(
            f"checkpoint {str(checkpoint)!r} cannot be restored ({first_line(error)}); {ANOTHER}"
        ) from None
    eval_dataloader.load_state_dict(fresh_eval_state)

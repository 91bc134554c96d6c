"""What keeps a training run safe, beside train_accelerate.py's loop.

- The output folder's rules, checked before any data is read: a folder that can be written, never the folder the
  model starts from, and an earlier run replaced only with --overwrite_output_dir.
- `Guard`, which the loop asks after each batch: SIGTERM or Ctrl-C stop the run after the current step with a
  checkpoint and the model (a second Ctrl-C stops at once), and a loss or weights that become NaN or infinite stop
  it with nothing saved over what is good.
- The one-line message for a full disk: what was being saved, and what is kept.
"""

import argparse
import math
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from . import files
from .cli import UsageError, one_line

# What a run killed while saving leaves behind: the model's staging folders (.partial-* from gpt2edu.files, .final-*
# from earlier versions) and half-written checkpoints.
STAGING_PATTERNS = (".final-*", ".partial-*", "step_*.tmp")
RESUME_ADVICE = (
    "the earlier checkpoints and model are kept: free some space, then continue with --resume_from_checkpoint latest"
)


def no_space(what: str, advice: str = RESUME_ADVICE) -> str:
    """The message for a full disk met while doing `what`."""
    return f"no space left on device while {what}; {advice}"


# --- the output folder --------------------------------------------------------------------------------------------


def check_output_dir(args: argparse.Namespace) -> None:
    """Refuse an output folder that cannot be written, or that holds an earlier run not being resumed or overwritten.

    Runs before any data is read: a bad folder should not cost the minutes of loading a corpus.
    """
    out = Path(args.output_dir)
    try:
        files.check_output_dir(out, "--output_dir")  # a file, or a folder that cannot be created or written
        source = Path(args.model_name_or_path) if args.model_name_or_path else None
        if source is not None and source.is_dir() and out.is_dir() and os.path.samefile(source, out):
            raise UsageError(
                f"--output_dir {args.output_dir!r} is the folder --model_name_or_path reads from: training would "
                "replace the model it starts from; choose another --output_dir"
            )
        if args.resume_from_checkpoint or args.overwrite_output_dir or not out.is_dir():
            return
        staging = {p for pattern in STAGING_PATTERNS for p in out.glob(pattern)}
        earlier = sorted(p.name for p in out.iterdir() if p not in staging)
    except OSError as error:  # e.g. a name too long for the file system
        raise UsageError(cannot_create(args, error)) from None
    if earlier:
        shown = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        hint = "--resume_from_checkpoint latest to continue it, " if any(out.glob("step_*")) else ""
        raise UsageError(
            f"--output_dir {args.output_dir!r} already holds an earlier run ({shown}); pass --overwrite_output_dir "
            f"to replace it, {hint}or choose another --output_dir"
        )


def cannot_create(args: argparse.Namespace, error: OSError) -> str:
    reason = error.strerror or one_line(error, 200)  # the path is in the message already
    return f"--output_dir {args.output_dir!r} cannot be created or written ({reason}); choose another --output_dir"


def prepare_output_dir(args: argparse.Namespace, resuming: bool) -> None:
    """Create the output folder; remove what killed saves left behind and, with --overwrite_output_dir, the earlier
    run's checkpoints (a later --resume_from_checkpoint latest must not pick one of those)."""
    out = Path(args.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # what check_output_dir could not foresee
        raise UsageError(cannot_create(args, error)) from None
    for old in out.glob(".step_*.old-*"):  # a checkpoint set aside by a save killed between its two renames
        files.clean_stale_staging(out / old.name[1:].partition(".old-")[0])
    stale = [p for pattern in STAGING_PATTERNS for p in out.glob(pattern)]
    if args.overwrite_output_dir and not resuming:
        stale += [p for p in out.glob("step_*") if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


# --- stopping: on SIGTERM or Ctrl-C, and on divergence ------------------------------------------------------------


class TrainingDiverged(UsageError):
    """The loss or the weights became NaN or infinite: nothing more is saved."""


class Guard:
    """What the loop checks after each batch: stop requests and divergence. As a context manager it installs the
    SIGTERM and SIGINT handlers (and puts the previous ones back)."""

    def __init__(self, args: argparse.Namespace, accelerator: Accelerator):
        self.args, self.accelerator = args, accelerator
        self.requested = False  # this process received SIGTERM or SIGINT
        self.should_stop = False  # some process did: every process stops after this step
        self.signal_name = "SIGTERM"
        self.previous_handlers = {}

    def __enter__(self) -> "Guard":
        self.previous_handlers = {
            sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler)

    def request_stop(self, signum, frame) -> None:
        """SIGTERM and SIGINT handler: finish the current step, save a checkpoint and the model, then exit cleanly.

        A second Ctrl-C stops at once (Python's KeyboardInterrupt), for a user who cannot wait for the save.
        """
        self.requested, self.signal_name = True, signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def check_batch(self, loss: float, batch: dict, step: int) -> int:
        """One collective per micro-batch: returns the tokens of every process's batch, sets `should_stop` if any
        process got a stop signal, and raises TrainingDiverged if any process's loss is NaN or infinite."""
        counts = self.accelerator.reduce(
            torch.tensor(
                [batch["input_ids"].numel(), self.requested, not math.isfinite(loss)], device=self.accelerator.device
            ),
            reduction="sum",
        )
        if counts[2]:
            raise diverged(self.args, step, "the training loss is not a number")
        self.should_stop = bool(counts[1])
        return int(counts[0])

    def check_weights(self, model: torch.nn.Module, step: int) -> None:
        """Raise TrainingDiverged if a weight on any process is NaN or infinite: such a model is never saved."""
        check_weights(model, self.accelerator, self.args, step)

    def stop_message(self, step: int) -> str:
        return f"{self.signal_name}: stopped at step {step} with a checkpoint; continue with: {resume_command()}"


def check_weights(model: torch.nn.Module, accelerator: Accelerator, args: argparse.Namespace, step: int) -> None:
    """Raise TrainingDiverged if a weight on any process is NaN or infinite (one collective)."""
    bad = sum(int(not torch.isfinite(p.detach()).all()) for p in model.parameters() if p.is_floating_point())
    if int(accelerator.reduce(torch.tensor(bad, device=accelerator.device), reduction="sum")) != 0:
        raise diverged(args, step, "the weights hold NaN or infinite values")


def diverged(args: argparse.Namespace, step: int, what: str) -> TrainingDiverged:
    checkpoints = [p for p in Path(args.output_dir).glob("step_*") if p.name[5:].isdigit()]
    kept = (
        f"the last checkpoint, {max(checkpoints, key=lambda p: int(p.name[5:])).name}, is kept"
        if checkpoints
        else "nothing was saved"
    )
    return TrainingDiverged(
        f"training diverged at step {step}: {what}; {kept}. Lower --learning_rate (now {args.learning_rate:g}) "
        f"or --max_grad_norm (now {args.max_grad_norm:g}) and train again"
    )


def resume_command() -> str:
    """This run's command line with --resume_from_checkpoint latest (replacing any it had)."""
    argv, kept = sys.argv[1:], []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume_from_checkpoint":
            skip = True
        elif not arg.startswith("--resume_from_checkpoint="):
            kept.append(arg)
    return shlex.join(["python", os.path.basename(sys.argv[0]), *kept, "--resume_from_checkpoint", "latest"])

"""What train_accelerate.py tells about a run: the progress bar, training_log.jsonl, MFU, loss.png, the model card,
and what of the launch's request runs instead on this hardware.

`Progress` keeps the numbers between two log entries (mean training loss, tokens per second, model FLOPs
utilisation) and writes each entry to training_log.jsonl and to Accelerate's trackers.
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, str_to_bool
from tqdm.auto import tqdm

from .files import reporting_full_disk
from .hub import model_card as hub_model_card
from .train_guards import no_space

# --- model FLOPs utilisation -------------------------------------------------------------------------------------

# Dense bf16 peak of one GPU, FLOP/s, from the vendors' data sheets (H100 and H200 SXM share their compute).
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def flops_per_token(model, block_size: int) -> float:
    """Training FLOPs per token: 6 per matmul weight (forward + backward) plus attention's 12 * layers * width * T."""
    config = model.config
    embeddings = {"model.tok_emb.weight", "model.pos_emb.weight"}  # lookups, not matmuls
    matmul_params = sum(p.numel() for name, p in model.named_parameters() if name not in embeddings)
    if config.tie_word_embeddings:  # the output head is the token embedding, used as a matmul
        matmul_params += config.vocab_size * config.emb_dim
    return 6 * matmul_params + 12 * config.n_layers * config.emb_dim * block_size


def device_peak_flops(device: torch.device) -> float:
    """The device's peak: a known GPU's bf16 figure, or on a CPU a measured float32 matmul rate."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((peak for gpu, peak in GPU_PEAK_FLOPS.items() if gpu in name), float("nan"))
    a = torch.ones(1024, 1024)  # not randn: the global random state belongs to the run (resumes restore it)
    a @ a  # warm up
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    return 10 * 2 * 1024**3 / (time.perf_counter() - start)


# --- progress and the training log --------------------------------------------------------------------------------


class Progress:
    """The progress bar and the training log's entries; a context manager that closes the bar (so that the line of a
    message printed after it starts on a line of its own)."""

    def __init__(self, args: argparse.Namespace, accelerator: Accelerator, model, state: dict):
        self.args, self.accelerator, self.state = args, accelerator, state
        self.log_path = Path(args.output_dir) / "training_log.jsonl"
        self.bar = tqdm(
            total=args.max_train_steps, initial=state["step"], disable=not accelerator.is_local_main_process
        )
        self.loss, self.steps, self.tokens, self.start = 0.0, 0, 0, time.perf_counter()
        # MFU: the FLOPs the model needs per token, against what all the devices could do at most
        self.peak_flops = device_peak_flops(accelerator.device) * accelerator.num_processes
        self.flops_per_token = flops_per_token(accelerator.unwrap_model(model), args.block_size)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()

    def add(self, loss: float, tokens: int) -> None:
        """Count a micro-batch: its share of the step's loss, and the tokens of every process."""
        self.loss += loss
        self.tokens += tokens

    def step(self) -> None:
        self.steps += 1
        self.bar.update(1)

    def entry(self, lr: float) -> dict:
        """The log entry of this step: the training loss (mean over the steps since the last entry and over the
        processes: a collective), the learning rate, tokens per second and MFU; then starts the next window."""
        train_loss = self.accelerator.reduce(
            torch.tensor(self.loss / self.steps, device=self.accelerator.device), reduction="mean"
        ).item()
        tokens_per_s = self.tokens / (time.perf_counter() - self.start)
        mfu = self.flops_per_token * tokens_per_s / self.peak_flops
        self.bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", mfu=f"{mfu:.1%}")
        self.loss, self.steps, self.tokens, self.start = 0.0, 0, 0, time.perf_counter()
        return {
            "step": self.state["step"],
            "tokens_seen": self.state["tokens_seen"],
            "train_loss": train_loss,
            "lr": lr,
            "tokens_per_s": tokens_per_s,
            "mfu": mfu,
        }

    def write(self, entry: dict) -> None:
        """Append the entry to training_log.jsonl (main process) and to the trackers of --with_tracking."""
        if self.accelerator.is_main_process:
            with reporting_full_disk(self.log_path.parent, no_space(f"writing {self.log_path}")):
                with self.log_path.open("a") as log:
                    log.write(json.dumps(entry) + "\n")
        if self.args.with_tracking:
            self.accelerator.log(entry, step=entry["step"])


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def start_log(path: Path, resumed_step: int | None) -> None:
    """Start training_log.jsonl afresh or, resuming, keep the entries up to the checkpoint's step (a killed run may
    have logged steps after it)."""
    kept = [entry for entry in read_log(path) if entry["step"] <= resumed_step] if resumed_step is not None else []
    path.write_text("".join(json.dumps(entry) + "\n" for entry in kept))


# --- before and after ---------------------------------------------------------------------------------------------


def setup_notes(accelerator) -> list[str]:
    """What the launch asked for that Accelerate cannot do on this hardware, and what runs instead: one line each.

    On CPU processes Accelerate drops an FSDP or DeepSpeed config without a word and runs plain data parallelism, and
    it runs --mixed_precision fp16 as float32 (it has float16 autocast for GPUs only; bf16 does autocast on a CPU).
    """
    notes = []
    n = accelerator.num_processes
    instead = f"DDP over {n} processes, each holding the whole model" if n > 1 else "the whole model on one process"
    for variable, name, kind in (
        ("ACCELERATE_USE_FSDP", "FSDP", DistributedType.FSDP),
        ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed", DistributedType.DEEPSPEED),
    ):
        if str_to_bool(os.environ.get(variable, "false")) and accelerator.distributed_type != kind:
            notes.append(
                f"note: the launch config asks for {name}, which Accelerate cannot run on {accelerator.device.type} "
                f"processes; training with {instead} instead"
            )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        notes.append(
            "note: --mixed_precision fp16 does nothing on a CPU (Accelerate's float16 autocast is for GPUs); "
            "training in float32. On a CPU, bf16 does run in mixed precision"
        )
    return notes


def describe_run(args: argparse.Namespace, model, train_dataset, start_step: int) -> str:
    """One line before training: the model's size, the corpus in tokens, the steps and where the run writes."""
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    shape = f"{config.n_layers} layers, emb_dim {config.emb_dim}, context {config.context_length}"
    tokens = "a streamed corpus" if args.streaming else f"{len(train_dataset) * args.block_size:,} training tokens"
    steps = f"steps {start_step + 1}-{args.max_train_steps}" if start_step else f"{args.max_train_steps} steps"
    return f"Training {n_params / 1e6:.1f}M parameters ({shape}) on {tokens}: {steps}, writing to {args.output_dir}/"


def plot_losses(log: list[dict], path: Path) -> None:
    """The seed's plot: training and validation loss against steps, tokens seen on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([e["step"] for e in log], [e["train_loss"] for e in log], label="training loss")
    evaluated = [e for e in log if "val_loss" in e]
    ax.plot([e["step"] for e in evaluated], [e["val_loss"] for e in evaluated], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    tokens_axis = ax.twiny()  # same curve, read against tokens seen
    tokens_axis.plot([e["tokens_seen"] for e in log], [e["train_loss"] for e in log], alpha=0)
    tokens_axis.set_xlabel("tokens seen")
    fig.tight_layout()
    saved = "the model is saved; free some space and draw it again from training_log.jsonl"
    try:
        with reporting_full_disk(path.parent, no_space("drawing loss.png", saved)):
            fig.savefig(path)
    finally:
        plt.close(fig)


def model_card(model, args: argparse.Namespace, log: list[dict]) -> str:
    """The output folder's README.md (huggingface_hub's ModelCard): what the model is and how it was trained."""
    n_params = sum(p.numel() for p in model.parameters())
    last = log[-1] if log else {}
    data = args.dataset_name or (args.train_file and Path(args.train_file).name) or "the gpt2edu default corpus"
    config = {k: getattr(model.config, k) for k in ("emb_dim", "n_heads", "n_layers", "context_length", "vocab_size")}
    start = f"`{args.model_name_or_path}`" if args.model_name_or_path else "scratch"
    description = (
        f"A GPT-2-architecture model ({n_params / 1e6:.1f}M parameters, {config}) trained from {start} on {data} "
        f"with gpt2edu's `train_accelerate.py`: {last.get('step', 0)} steps, {last.get('tokens_seen', 0):,} tokens, "
        f"final validation loss {last.get('val_loss', math.nan):.3f}."
    )
    return hub_model_card(args.hub_model_id or Path(args.output_dir).absolute().name, description)

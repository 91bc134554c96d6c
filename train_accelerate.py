"""Train gpt2edu: the seed's train.py on the Hugging Face ecosystem.

`datasets` reads (or streams) the corpus, tiktoken tokenizes it, and the tokens are packed into fixed blocks;
Accelerate runs the loop on a CPU, one GPU, several GPUs or several machines, and saves checkpoints that resume
exactly. With no arguments it trains a small model on the corpus that ships with the project:

    python train_accelerate.py                       # writes ./gpt2edu-out
    python run_inference.py --model gpt2edu-out --prompt "Every effort moves you"

The loop comes first, then how it is set up. Beside this file, in gpt2edu/: the flags and their checks
(train_args.py), reading and packing the corpus (train_data.py), checkpoints (train_checkpoints.py), what keeps a run
safe (train_guards.py: the output folder, stop signals, divergence, a full disk) and what it reports (train_report.py:
progress, training_log.jsonl, MFU, loss.png, the model card). The seed's `train()`, the book's loop on a string, is
gpt2edu/seed.py's; it is importable from here too, as from the seed's train.py.
"""

import math
import os
import sys
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import DistributedType, set_seed
from transformers import default_data_collator, get_scheduler

from configuration_gpt2edu import GPT2EduConfig
from gpt2edu import train_args, train_data, train_guards, train_report
from gpt2edu import train_checkpoints as checkpoints
from gpt2edu.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, first_line, report
from gpt2edu.files import atomic_write
from gpt2edu.hub import push_to_hub
from gpt2edu.seed import train  # noqa: F401  (the seed's train(), importable from here as from the seed's train.py)
from gpt2edu.train_data import build_datasets, running_text_pieces  # noqa: F401  (running_text_pieces: for tests)
from gpt2edu.train_guards import Guard
from gpt2edu.train_report import Progress
from modeling_gpt2edu import GPT2EduForCausalLM
from tokenization_gpt2edu import gpt2_tokenizer, tiktoken_encoding  # noqa: F401  (tiktoken_encoding: for tests)

DEFAULT_CORPUS = Path(__file__).resolve().parent / "data" / "default_corpus.txt"


# --- the loop -----------------------------------------------------------------------------------------------------


def train_loop(args, accelerator, model, optimizer, lr_scheduler, train_dataloader, eval_dataloader, tokenizer, state):
    """The seed's train_model_simple on Accelerate: forward, backward, clip, step, schedule; every N steps log,
    evaluate and sample, checkpoint. `state` (step, epoch, tokens seen: what a checkpoint saves) is updated in place.
    """
    with Guard(args, accelerator) as guard, Progress(args, accelerator, model, state) as progress:
        for batch in epochs(train_dataloader, args, state, guard):
            with accelerator.accumulate(model):  # with --gradient_accumulation_steps N, a step every N batches
                loss = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            loss_value = loss.item()
            # One collective: the tokens of every process, stop requests (SIGTERM, Ctrl-C), a loss that is not a number
            tokens = guard.check_batch(loss_value, batch, state["step"] + 1)
            state["tokens_seen"] += tokens
            progress.add(loss_value / args.gradient_accumulation_steps, tokens)
            if not accelerator.sync_gradients:
                continue  # a micro-batch of a step still accumulating
            state["step"] += 1
            progress.step()
            step, last = state["step"], guard.should_stop or state["step"] >= args.max_train_steps
            # Not on a stop signal: a preempted job has seconds, not minutes, before it is killed.
            evaluating = step % args.eval_steps == 0 or step >= args.max_train_steps
            if step % args.logging_steps == 0 or evaluating or last:
                entry = progress.entry(lr_scheduler.get_last_lr()[0])  # loss, tokens/s and MFU since the last entry
                if evaluating:
                    entry["val_loss"], entry["perplexity"] = evaluate(model, eval_dataloader, accelerator)
                    sample = generate_sample(model, tokenizer, args.sample_prompt, accelerator)
                    losses = f"train loss {entry['train_loss']:.3f}, val loss {entry['val_loss']:.3f}"
                    accelerator.print(f"\nstep {step}: {losses} | {sample}")
                progress.write(entry)  # training_log.jsonl and --with_tracking's trackers
            if guard.should_stop or (args.checkpointing_steps and step % args.checkpointing_steps == 0):
                guard.check_weights(model, step)  # a diverged model is never saved over a good checkpoint
                checkpoints.save(accelerator, args.output_dir, state)
            if last:
                break
    if guard.should_stop:
        accelerator.print(guard.stop_message(state["step"]))


def epochs(train_dataloader, args, state: dict, guard: Guard):
    """The training batches, epoch after epoch, until the last step or a stop request; counts epochs in `state`."""
    empty_epochs = 0
    while state["step"] < args.max_train_steps and not guard.requested:
        train_dataloader.set_epoch(state["epoch"])  # each epoch its own shuffle
        n_batches = 0
        for batch in train_dataloader:
            n_batches += 1
            yield batch
        empty_epochs = empty_epochs + 1 if n_batches == 0 else 0
        if empty_epochs == 2 or (empty_epochs == 1 and state["step"] == 0):
            raise train_data.no_batch_error(args)  # a stream too short for a batch would loop forever
        state["epoch"] += 1


@torch.no_grad()
def evaluate(model, eval_dataloader, accelerator: Accelerator) -> tuple[float, float]:
    """Mean validation loss over the held-out blocks (gathered from every process) and its perplexity."""
    model.eval()
    losses = []
    for batch in eval_dataloader:
        loss = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
        losses.append(accelerator.gather_for_metrics(loss.repeat(batch["input_ids"].shape[0])))
    model.train()
    val_loss = torch.cat(losses).mean().item()
    return val_loss, math.exp(min(val_loss, 50.0))


@torch.no_grad()
def generate_sample(model, tokenizer, prompt: str, accelerator: Accelerator, max_new_tokens: int = 25) -> str:
    """The seed's generate_and_print_sample: a greedy continuation of the prompt, one line.

    Empty for a model sharded by FSDP or DeepSpeed, which cannot generate on one process.
    """
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return ""
    model = accelerator.unwrap_model(model)
    model.eval()
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(accelerator.device)
    max_new_tokens = min(max_new_tokens, model.config.context_length - input_ids.shape[1])
    output = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=50256)
    model.train()
    return tokenizer.decode(output[0]).replace("\n", " ")


# --- setting up and finishing -------------------------------------------------------------------------------------


def run(args, raw=None, documents: bool = True, config: GPT2EduConfig | None = None) -> list[dict]:
    """Train as the arguments say and write the output folder; returns the training log (one dict per logged step).

    `raw` (datasets with a "train" and a "validation" split) and `config` replace what the arguments would load.
    """
    train_guards.check_output_dir(args)  # before any data is read: a bad folder must not cost minutes of loading
    accelerator = make_accelerator(args)
    set_seed(args.seed)
    model = build_model(args, config)
    tokenizer = gpt2_tokenizer()
    tokenizer.model_max_length = model.config.context_length  # saved with the model: the longest input it reads
    train_args.check_model_fits(args, model, tokenizer)  # --block_size, the vocabulary, --sample_prompt
    checkpoint = resumed_state = None
    if args.resume_from_checkpoint:  # checked before any data is read, restored once everything is prepared
        checkpoint = checkpoints.find(args.output_dir, args.resume_from_checkpoint)
        resumed_state = checkpoints.check(checkpoint, model, accelerator)

    train_dataset, train_dataloader, eval_dataloader = build_dataloaders(args, accelerator, raw, documents)
    optimizer = build_optimizer(model, args)
    if args.compile:
        model.compile()  # in place: unlike torch.compile(model), no wrapper, so the saved names stay the same
    model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader
    )
    train_data.check_one_batch(args, train_dataset, train_dataloader)
    lr_scheduler = build_scheduler(args, accelerator, optimizer, train_dataloader)

    state = start(args, accelerator, checkpoint, resumed_state, eval_dataloader)
    accelerator.print(train_report.describe_run(args, accelerator.unwrap_model(model), train_dataset, state["step"]))
    try:
        train_loop(
            args, accelerator, model, optimizer, lr_scheduler, train_dataloader, eval_dataloader, tokenizer, state
        )
    except train_data.STREAM_ERRORS as error:  # a streamed corpus is read while training
        raise UsageError(train_data.describe_data_error(args, error)) from None
    train_guards.check_weights(model, accelerator, args, state["step"])  # a diverged model is not saved
    log = save_model(args, accelerator, model, tokenizer)
    accelerator.end_training()
    return log


def make_accelerator(args) -> Accelerator:
    """Accelerate's set-up: devices, mixed precision, gradient accumulation, loaders that resume, trackers."""
    try:
        accelerator = new_accelerator(args)
    except ImportError as error:  # e.g. a DeepSpeed config without deepspeed installed
        raise UsageError(f"the launch config needs a package that is not installed: {error}") from None
    for note in train_report.setup_notes(accelerator):  # what was asked for and cannot run here
        accelerator.print(note)
    return accelerator


def new_accelerator(args) -> Accelerator:
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        # HF: on a machine with no accelerator, `accelerate launch --multi_gpu` starts CPU ranks (DDP over gloo)
        # only when the script asks for the CPU.
        cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True, use_stateful_dataloader=True, dispatch_batches=False, data_seed=args.seed
        ),
        log_with=[name.strip() for name in args.report_to.split(",") if name.strip()] if args.with_tracking else None,
        project_dir=args.output_dir,
    )


def build_model(args, config: GPT2EduConfig | None = None) -> GPT2EduForCausalLM:
    """A new model (`config`, or --config_overrides over GPT-2 124M's), or the one --model_name_or_path names."""
    if config is not None:
        return GPT2EduForCausalLM(config)
    if args.model_name_or_path:
        return train_args.load_start_model(args.model_name_or_path)
    overrides = train_args.SMALL_MODEL if args.config_overrides is None else args.config_overrides
    return GPT2EduForCausalLM(train_args.new_model_config(overrides))


def build_dataloaders(args, accelerator: Accelerator, raw, documents: bool):
    """The corpus in blocks (gpt2edu/train_data.py) and a loader per split; returns the training blocks too."""
    if raw is None:
        with accelerator.main_process_first():  # the first process fills datasets' cache, the others read it
            raw, documents = train_data.read_corpus(args, DEFAULT_CORPUS)
    train_dataset, eval_dataset = build_datasets(args, raw, documents, args.block_size)
    # Each loader draws its worker seed from a generator of its own: drawing it from torch's global generator when an
    # iterator starts would shift the dropout masks of a resumed run, which starts its iterator mid-epoch.
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        shuffle=not args.streaming,
        batch_size=args.per_device_train_batch_size,
        collate_fn=default_data_collator,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    eval_dataloader = torch.utils.data.DataLoader(
        eval_dataset,
        batch_size=args.per_device_eval_batch_size,
        collate_fn=default_data_collator,
        generator=torch.Generator().manual_seed(args.seed),
    )
    return train_dataset, train_dataloader, eval_dataloader


def build_optimizer(model: torch.nn.Module, args) -> torch.optim.AdamW:
    """AdamW, decaying the matrices (linear and embedding weights) but not the biases and LayerNorm parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.95))


def build_scheduler(args, accelerator: Accelerator, optimizer, train_dataloader):
    """The learning rate's schedule: warmup (default 5% of the steps), then --lr_scheduler_type, over the run.

    Without --max_train_steps, the run is --num_train_epochs passes over the (prepared, per-process) loader.
    """
    if args.max_train_steps is None:
        if args.streaming:
            raise UsageError("--streaming needs --max_train_steps: a stream's length is unknown in advance")
        steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    warmup = args.num_warmup_steps if args.num_warmup_steps is not None else args.max_train_steps // 20
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=warmup * accelerator.num_processes,  # HF: Accelerate steps it once per process
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    return accelerator.prepare(scheduler)


def start(args, accelerator: Accelerator, checkpoint: Path | None, resumed_state: dict | None, eval_dataloader):
    """Make the output folder ready, restore the checkpoint if resuming, start the log and the trackers; returns
    the state the loop starts from."""
    if accelerator.is_main_process:
        train_guards.prepare_output_dir(args, resuming=checkpoint is not None)
    accelerator.wait_for_everyone()
    state = {"step": 0, "epoch": 0, "tokens_seen": 0}
    if checkpoint is not None:
        checkpoints.load(accelerator, checkpoint, eval_dataloader)
        state = resumed_state
        accelerator.print(f"Resuming from {checkpoint} (step {state['step']}, {state['tokens_seen']:,} tokens seen)")
    if accelerator.is_main_process:
        resumed_step = state["step"] if checkpoint is not None else None
        train_report.start_log(Path(args.output_dir) / "training_log.jsonl", resumed_step)
    if args.with_tracking:
        accelerator.init_trackers("gpt2edu", config={k: v for k, v in vars(args).items() if v is not None})
    return state


def save_model(args, accelerator: Accelerator, model, tokenizer) -> list[dict]:
    """Write the Hugging Face folder (weights, config, code, tokenizer, model card) and loss.png into --output_dir,
    the folder's files all at once; push it with --push_to_hub. Returns the training log."""
    accelerator.wait_for_everyone()
    out = Path(args.output_dir)
    log = train_report.read_log(out / "training_log.jsonl")
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)  # HF: gathers the full weights under FSDP / DeepSpeed ZeRO-3
    if accelerator.is_main_process:
        full_disk = train_guards.no_space(f"saving the model into {args.output_dir}")
        with atomic_write(out, into=True, full_disk_message=full_disk) as staging:
            unwrapped.save_pretrained(staging, state_dict=state_dict)
            tokenizer.save_pretrained(staging)
            (staging / "README.md").write_text(train_report.model_card(unwrapped, args, log))
        train_report.plot_losses(log, out / "loss.png")
        generate = f'python run_inference.py --model {args.output_dir} --prompt "{args.sample_prompt}"'
        accelerator.print(
            f"Done. Model: {args.output_dir}/  Loss plot: {args.output_dir}/loss.png  Generate: {generate}"
        )
        if args.push_to_hub:
            repo_id = args.hub_model_id or out.name
            # The model folder's files, not the checkpoints' subfolders
            try:
                message = "Upload model from train_accelerate.py"
                url = push_to_hub(out, repo_id, message=message, ignore_patterns=["*/*"])
            except Exception as error:  # network edge: HTTP, connection and auth failures come in many types
                failed = f"push to {repo_id} failed ({first_line(error)}); {args.output_dir} is complete"
                raise UsageError(failed) from None
            accelerator.print(f"Pushed to {url}")
    accelerator.wait_for_everyone()
    return log


# --- the command line and the seed's library API ------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    """The flags (gpt2edu/train_args.py), checked; the shipped corpus when no data is named."""
    return train_args.parse_args(argv, DEFAULT_CORPUS)


def load_raw_datasets(args) -> tuple[datasets.DatasetDict | datasets.IterableDatasetDict, bool]:
    """The corpus the arguments name, read with datasets.load_dataset; and whether each row is a whole document."""
    return train_data.load_raw_datasets(args, DEFAULT_CORPUS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UsageError as error:
        if int(os.environ.get("RANK", "0")) == 0:  # one line, not one per process
            report(error)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before training started (or a second one): nothing was saved after it
        print(f"{os.path.basename(sys.argv[0])}: interrupted; the checkpoints saved so far are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

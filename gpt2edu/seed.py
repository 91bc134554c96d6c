"""The seed's public functions by their names, with the book's signatures, working on gpt2edu models.

    from gpt2edu.seed import create_dataloader_v1, train_model_simple, generate_tokens_greedy

What the seed's utils.py, train.py and run_inference.py offered a learner, on the real pieces rather than a second
copy of them: the model is `GPT2EduForCausalLM` (its forward returns an output object with `.logits`, where the
seed's returned the logits), the tokenizer is tiktoken's GPT-2 encoding (`tokenization_gpt2edu.tiktoken_encoding()`,
the seed's `tiktoken.get_encoding("gpt2")`; the Hugging Face tokenizer `gpt2_tokenizer()` works too), the data goes
through torch's `DataLoader`, and checkpoints are read and written in the seed's `.pth` form with the converter's
name maps (gpt2edu/convert_maps.py). As in the book, `train_model_simple` and `generate_and_print_sample` print their
progress.

`generate_response_from_prompt` is run_inference.py's (gpt2edu/generation.py). `train` is the seed's train(): the
book's loop above on a string (train_accelerate.py re-exports it; that program is the trainer on Accelerate).
"""

from pathlib import Path

import tiktoken
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedModel

from configuration_gpt2edu import GPT2EduConfig
from modeling_gpt2edu import GPT2EduForCausalLM
from tokenization_gpt2edu import ENDOFTEXT, gpt2_tokenizer, tiktoken_encoding

from . import SEED_API
from . import convert_sources as sources
from .convert_maps import (  # the converter's name maps (seed <-> gpt2edu), one copy for every user
    SEED_CONFIG_FIELDS,
    gpt2edu_to_seed_state_dict,
    seed_to_gpt2edu_state_dict,
    strip_wrapper_prefixes,
)
from .convert_sources import read_seed_checkpoint
from .files import atomic_write
from .generation import generate_response_from_prompt  # noqa: F401  (the seed API re-exports it)
from .loading import get_device

__all__ = list(SEED_API)  # the names `from gpt2edu import ...` finds here


# --- text <-> token ids ---------------------------------------------------------------------------------------------


def encode(text: str, tokenizer) -> list[int]:
    """The token ids of `text` from tiktoken or a Hugging Face tokenizer, `<|endoftext|>` read as the special token."""
    if isinstance(tokenizer, tiktoken.Encoding):
        return tokenizer.encode(text, allowed_special={ENDOFTEXT})
    return tokenizer(text, verbose=False)["input_ids"]  # verbose=False: no "longer than the model" warning


def encode_text_to_token_ids(text: str, tokenizer) -> torch.Tensor:
    """Encode text into a batch of one sequence of token ids.

    Args:
        text: The text.
        tokenizer: tiktoken's GPT-2 encoding (or a Hugging Face tokenizer).

    Returns:
        A (1, n_tokens) tensor of token ids.
    """
    return torch.tensor(encode(text, tokenizer), dtype=torch.long).unsqueeze(0)  # add the batch dimension


def decode_token_ids_to_text(token_ids: torch.Tensor, tokenizer) -> str:
    """Decode a (1, n_tokens) tensor (or a 1-D one) of token ids back into text."""
    return tokenizer.decode(token_ids.squeeze(0).tolist())  # remove the batch dimension


# --- generation -----------------------------------------------------------------------------------------------------


def model_logits(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """The logits (batch, seq, vocab) of a gpt2edu model (an output object) or of the seed's GPTModel (a tensor)."""
    output = model(idx, use_cache=False) if isinstance(model, PreTrainedModel) else model(idx)
    return getattr(output, "logits", output)


def context_size_of(model: torch.nn.Module) -> int:
    """The model's context length, in tokens."""
    config = getattr(model, "config", None)
    return config.max_position_embeddings if config is not None else model.pos_emb.weight.shape[0]


def generate_tokens_greedy(
    model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int, context_size: int
) -> torch.Tensor:
    """The seed's greedy loop: each step runs the last `context_size` tokens and appends the likeliest next token.

    It goes on past the context by cropping the input at every step. `model.generate()` gives the same tokens
    faster (it keeps a KV cache up to the context) and can sample; this loop is the one the book explains.

    Args:
        model: A gpt2edu model (or the seed's GPTModel), on the device of `idx`.
        idx: Token ids, (batch, n_tokens).
        max_new_tokens: How many tokens to append.
        context_size: How many of the last tokens the model reads at each step (its context length).

    Returns:
        The token ids, (batch, n_tokens + max_new_tokens).
    """
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # crop to the context: the model has no positions beyond it
        with torch.no_grad():
            logits = model_logits(model, idx_cond)[:, -1, :]  # the last position predicts the next token
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (batch, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (batch, n_tokens + 1)
    return idx


def generate_and_print_sample(model: torch.nn.Module, tokenizer, device, start_context: str) -> None:
    """Print a greedy 50-token continuation of `start_context` on one line, as the book does after each epoch."""
    model.eval()
    encoded = encode_text_to_token_ids(start_context, tokenizer).to(device)
    token_ids = generate_tokens_greedy(model, encoded, max_new_tokens=50, context_size=context_size_of(model))
    print(decode_token_ids_to_text(token_ids, tokenizer).replace("\n", " "))  # the seed's API prints: compact
    model.train()


# --- data -----------------------------------------------------------------------------------------------------------


class GPTDatasetV1(Dataset):
    """Windows of `max_length` tokens over a text, every `stride` tokens, each with its targets one token ahead."""

    def __init__(self, txt: str, tokenizer, max_length: int, stride: int):
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length and stride must be at least 1, got {max_length} and {stride}")
        self.input_ids = []
        self.target_ids = []
        token_ids = encode(txt, tokenizer)
        for i in range(0, len(token_ids) - max_length, stride):
            self.input_ids.append(torch.tensor(token_ids[i : i + max_length]))
            self.target_ids.append(torch.tensor(token_ids[i + 1 : i + max_length + 1]))  # shifted by one

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_ids[idx], self.target_ids[idx]


def create_dataloader_v1(
    txt: str,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader of (inputs, targets) batches over `txt`, tokenized with GPT-2's tiktoken encoding.

    Returns:
        Batches of two (batch_size, max_length) tensors: the inputs and the targets, one token ahead.
    """
    dataset = GPTDatasetV1(txt, tiktoken_encoding(), max_length, stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers)


# --- loss and training ----------------------------------------------------------------------------------------------


def calc_loss_batch(input_batch: torch.Tensor, target_batch: torch.Tensor, model, device) -> torch.Tensor:
    """The mean cross-entropy of the model's next-token predictions on one batch."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model_logits(model, input_batch)  # (batch, seq, vocab)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader: DataLoader, model, device, num_batches: int | None = None) -> float:
    """The mean loss over the first `num_batches` batches of a loader (all of them when None; NaN when empty)."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total_loss = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total_loss += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total_loss / num_batches


def evaluate_model(model, train_loader: DataLoader, val_loader: DataLoader, device, eval_iter: int):
    """The training and validation losses over `eval_iter` batches each, in eval mode and without gradients.

    Returns:
        (train_loss, val_loss).
    """
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def train_model_simple(
    model,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str,
    tokenizer,
):
    """The book's training loop: forward, loss, backward, step; evaluate every `eval_freq` steps; a sample per epoch.

    Returns:
        (train_losses, val_losses, tokens_seen): the losses at each evaluation and the tokens seen by then.
    """
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()  # the previous step's gradients
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen


def train(
    text_data: str,
    num_epochs: int = 5,
    batch_size: int = 2,
    learning_rate: float = 0.0004,
    eval_freq: int = 5,
    start_context: str = "Every effort moves you",
    config: GPT2EduConfig | dict | None = None,
    output_dir: str | Path | None = None,
):
    """The seed's train(): the book's loop on a string, the first 90% of its characters to train, the rest to validate.

    Args:
        text_data: The training text.
        num_epochs: Passes over the training windows.
        batch_size: Windows per step.
        learning_rate: AdamW's learning rate (weight decay 0.1, like the seed).
        eval_freq: Evaluate (training and validation loss over 5 batches) every this many steps.
        start_context: The prompt continued after each epoch.
        config: A GPT2EduConfig, or a dict of overrides of the seed's GPT-2 124M config.
        output_dir: Where to save the trained model as a Hugging Face folder (with GPT-2's tokenizer); nothing is
            written when None.

    Returns:
        (train_losses, val_losses, tokens_seen, model): the losses and tokens seen at each evaluation, and the
        trained GPT2EduForCausalLM.
    """
    if not isinstance(config, GPT2EduConfig):
        config = GPT2EduConfig(**(config or {}))
    torch.manual_seed(123)  # the seed's
    device = get_device()
    model = GPT2EduForCausalLM(config).to(device)
    split = int(0.9 * len(text_data))
    windows = dict(batch_size=batch_size, max_length=config.context_length, stride=config.context_length)
    train_loader = create_dataloader_v1(text_data[:split], **windows)
    val_loader = create_dataloader_v1(text_data[split:], **windows, shuffle=False, drop_last=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.1)
    eval_iter, tokenizer = 5, tiktoken_encoding()
    train_losses, val_losses, tokens_seen = train_model_simple(
        model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter, start_context, tokenizer
    )
    if output_dir is not None:
        hf_tokenizer = gpt2_tokenizer()  # the same ids as tiktoken's, saved as tokenizer.json
        hf_tokenizer.model_max_length = config.context_length  # the longest input the model reads
        with atomic_write(Path(output_dir), into=True) as staging:  # files of the same name replaced whole
            model.save_pretrained(staging)
            hf_tokenizer.save_pretrained(staging)
    return train_losses, val_losses, tokens_seen, model


# --- checkpoints in the seed's .pth form ----------------------------------------------------------------------------


def seed_config(config: GPT2EduConfig) -> dict:
    """The seed's config fields of a gpt2edu config, as the dict the book passes to `GPTModel(cfg)`."""
    return {name: getattr(config, name) for name in SEED_CONFIG_FIELDS}


def save_checkpoint(model: PreTrainedModel, optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """Write a seed training checkpoint: a `.pth` dict that the seed's code and `convert_checkpoint.py` read.

    It holds `model_state_dict` in the seed's names (`att.mask` buffers included), `optimizer_state_dict` (its
    parameters are in the seed model's order too), and `config`, the seed's config fields as a dict.
    """
    path = Path(path)
    checkpoint = {
        "model_state_dict": gpt2edu_to_seed_state_dict(dict(model.state_dict()), model.config),
        "optimizer_state_dict": optimizer.state_dict(),
        "config": seed_config(model.config),
    }
    with atomic_write(path, file=True) as staging:  # a failed write leaves any earlier file as it was
        torch.save(checkpoint, staging / path.name)


def load_checkpoint(path: str | Path) -> dict:
    """Read a seed `.pth` checkpoint (weights only: its pickle runs no code) in gpt2edu's terms.

    Returns:
        A dict with `model_state_dict` (gpt2edu's names: `GPT2EduForCausalLM(config).load_state_dict` takes it),
        `optimizer_state_dict` (None if the file holds none) and `config` (a `GPT2EduConfig`).
    """
    path = Path(path)
    source = read_seed_checkpoint(path)  # checks the tensors against the stored config
    stored = sources.load_checkpoint_file(path)
    optimizer_state_dict = stored.get("optimizer_state_dict") if isinstance(stored, dict) else None
    return {
        "model_state_dict": source.state_dict,
        "optimizer_state_dict": optimizer_state_dict,
        "config": source.config,
    }


def load_checkpoint_state_dict(checkpoint_path: str | Path, device) -> dict[str, torch.Tensor]:
    """The model weights of a seed `.pth` (a bare state dict or a training checkpoint), in gpt2edu's names.

    Returns:
        A state dict on `device` that a gpt2edu model of the same size loads with `load_state_dict`.

    Raises:
        ValueError: If the file is not a seed checkpoint.
    """
    path = Path(checkpoint_path)
    state_dict = strip_wrapper_prefixes(sources.load_seed_file(path)[0])  # torch.compile's and DDP's prefixes
    if "tok_emb.weight" not in state_dict or "pos_emb.weight" not in state_dict:
        raise ValueError(f"{path} is not a seed GPT checkpoint: it has no tok_emb.weight and pos_emb.weight")
    sizes = sources.seed_sizes_from_state_dict(state_dict)
    state_dict = seed_to_gpt2edu_state_dict(state_dict, sizes["n_layers"], sizes["qkv_bias"])
    return {name: tensor.to(device) for name, tensor in state_dict.items()}

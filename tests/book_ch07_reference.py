"""The book's chapter-7 data pipeline, as an independent reference for the tests (rasbt/LLMs-from-scratch,
ch07/01_main-chapter-code: gpt_instruction_finetuning.py, and exercise_experiments.py for exercise 7.2).

Written again from the book's code, in its shape: the Alpaca prompt, the training text, the collate function that
appends one <|endoftext|>, pads with it and ignores every padding target after the first, the same with the prompt
masked (exercise 7.2), and the loss of a batch.
"""

import torch

PAD_TOKEN_ID = 50256  # <|endoftext|>: the book pads with it, and the first one ends the response


def format_input(entry: dict) -> str:
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry["input"] else ""
    return instruction_text + input_text


def training_text(entry: dict) -> str:
    """What the book's InstructionDataset encodes: the prompt, then the response."""
    return format_input(entry) + f"\n\n### Response:\n{entry['output']}"


def collate(items: list[list[int]], instruction_lengths: list[int] | None = None, ignore_index: int = -100):
    """custom_collate_fn, or custom_collate_with_masking_fn (exercise 7.2) when `instruction_lengths` are given.

    Returns the (inputs, targets) pair of the book: inputs = padded[:-1], targets = padded[1:].
    """
    batch_max_length = max(len(item) + 1 for item in items)
    inputs_lst, targets_lst = [], []
    for index, item in enumerate(items):
        new_item = item.copy()
        new_item += [PAD_TOKEN_ID]  # the one <|endoftext|> that ends the response
        padded = new_item + [PAD_TOKEN_ID] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        mask = targets == PAD_TOKEN_ID
        indices = torch.nonzero(mask).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index  # every padding target after the first
        if instruction_lengths is not None:
            targets[: instruction_lengths[index] - 1] = ignore_index  # exercise 7.2: the prompt is not scored
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst), torch.stack(targets_lst)


def calc_loss_batch(input_batch: torch.Tensor, target_batch: torch.Tensor, model) -> torch.Tensor:
    """The book's loss: cross-entropy over every target that is not -100 (the model's `.logits`, as gpt2edu's)."""
    logits = model(input_batch).logits
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())

"""Continuing a prompt with transformers' generate(): run_inference.py's core, and the seed's library function.

`generate_response_from_prompt` is what `run_inference.py` runs and what the seed's API re-exports (gpt2edu/seed.py).
Like the seed's loop, it goes on past a gpt2edu model's context: generate() then feeds the model the last
`context_length` tokens at each step (see `GPT2EduForCausalLM.prepare_inputs_for_generation`).
"""

import logging

import torch
from transformers import PreTrainedModel, TextStreamer

from tokenization_gpt2edu import gpt2_tokenizer

from .loading import get_device, load_model_and_tokenizer

logger = logging.getLogger(__name__)
# transformers' generate() reminds, once, that a call goes past the model's context ("Depending on the model, you may
# observe exceptions..."): gpt2edu models go on past it by design, so for them the reminder is dropped.
REMINDER_LOGGER = logging.getLogger("transformers.generation.stopping_criteria")


def not_the_reminder(record: logging.LogRecord) -> bool:
    return "has exceeded the model's predefined maximum length" not in record.getMessage()


def check_prompt(prompt: str) -> None:
    """Raise ValueError for an empty prompt, or one with bytes that are not UTF-8 (surrogate escapes from argv)."""
    if not prompt:
        raise ValueError("the prompt is empty; pass some text to continue")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        char = prompt[error.start]
        byte = f"byte 0x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else f"character {char!r}"
        raise ValueError(
            f"the prompt is not UTF-8 text ({byte} at position {error.start}); pass UTF-8 text "
            "(set the terminal, or the file the prompt comes from, to UTF-8)"
        ) from None


def fit_to_context(input_ids: torch.Tensor, max_new_tokens: int, model: PreTrainedModel) -> torch.Tensor:
    """The prompt's ids as the model can continue them, with a log line when the text outgrows the context.

    gpt2edu models go on past their context as the seed's loop does: generate() feeds them the last
    `context_length` tokens at each step, so the prompt is passed whole. Other models (transformers' GPT-2...) stop
    at their context, so the whole output must fit in it: the prompt is cropped to its last tokens.

    Raises:
        ValueError: If a model that stops at its context is asked for more new tokens than the context holds.
    """
    context_length = getattr(model.config, "max_position_embeddings", None)
    prompt_length = input_ids.shape[1]
    if context_length is None or prompt_length + max_new_tokens <= context_length:
        return input_ids
    if model.config.model_type == "gpt2edu":
        if prompt_length > context_length:
            logger.warning(
                "The prompt has %d tokens, more than the model's %d-token context: like the seed's loop, the model "
                "reads only the last %d tokens of the text at each step.",
                prompt_length,
                context_length,
                context_length,
            )
        return input_ids
    if max_new_tokens >= context_length:
        raise ValueError(
            f"a {model.config.model_type} model stops at its {context_length}-token context: max_new_tokens must be "
            f"between 1 and {context_length - 1}, got {max_new_tokens} (gpt2edu models go on past their context)"
        )
    room = context_length - max_new_tokens
    logger.warning(
        "The prompt has %d tokens; keeping its last %d so that %d new tokens fit in the %d-token context.",
        prompt_length,
        room,
        max_new_tokens,
        context_length,
    )
    return input_ids[:, -room:]


def generate_response_from_prompt(
    prompt: str,
    model: PreTrainedModel | str,
    max_new_tokens: int = 20,
    tokenizer=None,
    stream: bool = False,
    **generate_kwargs,
) -> str:
    """Continue `prompt` with the model and return the continuation (greedy unless sampling is asked for).

    Args:
        prompt: Text to continue; must not be empty. It may be longer than the model's context.
        model: A loaded causal LM, or a folder / Hub id to load one from.
        max_new_tokens: How many tokens to add, at least 1. A gpt2edu model goes on past its context, where each
            new token costs a forward pass over the last `context_length` tokens, as in the seed's loop; other
            models stop at their context (fewer new tokens than it holds, the prompt cropped to make room).
        tokenizer: The model's tokenizer; GPT-2's when None.
        stream: Print the prompt, then the continuation token by token as it is generated, to stdout.
        **generate_kwargs: Passed to `model.generate`, e.g. `do_sample=True, temperature=0.8, top_k=50`.

    Returns:
        The generated text, without the prompt.

    Raises:
        ValueError: For an empty prompt, a bad token count or a model that cannot be loaded.
    """
    check_prompt(prompt)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if isinstance(model, str):
        model, tokenizer = load_model_and_tokenizer(model, get_device())
    tokenizer = tokenizer or gpt2_tokenizer()

    # verbose=False: the tokenizer's "longer than the maximum sequence length" warning; generate() windows it.
    input_ids = tokenizer(prompt, return_tensors="pt", verbose=False).input_ids
    n_embeddings = model.get_input_embeddings().num_embeddings
    if input_ids.numel() and int(input_ids.max()) >= n_embeddings:
        raise ValueError(
            f"the prompt has token id {int(input_ids.max())}, but the model knows only {n_embeddings} tokens; "
            "its tokenizer belongs to another model: save the model's own tokenizer with it"
        )
    input_ids = fit_to_context(input_ids, max_new_tokens, model).to(model.device)
    streamer = TextStreamer(tokenizer) if stream else None
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    past_the_context = model.config.model_type == "gpt2edu"
    if past_the_context:
        REMINDER_LOGGER.addFilter(not_the_reminder)
    try:
        with torch.no_grad():
            output = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                streamer=streamer,
                pad_token_id=pad_token_id,
                **generate_kwargs,
            )
    finally:
        REMINDER_LOGGER.removeFilter(not_the_reminder)
    return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=False)

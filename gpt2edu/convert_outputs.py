"""Writing what convert_checkpoint.py converts, and verifying it: model folders, seed .pth files, the Hub.

`build_model` makes the model from what gpt2edu/convert_sources.py read. Every output is written into a staging folder
beside OUT (`gpt2edu.files.atomic_write`), checked there as a user will get it, and only then moved into place: a
folder is loaded with `AutoModelForCausalLM.from_pretrained` (a classifier's with
`AutoModelForSequenceClassification`) and every parameter compared bit for bit with the source; a seed .pth is read
back with `torch.load`. A failed, interrupted or disk-full conversion leaves OUT as it was.
"""

import json
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2LMHeadModel,
    PreTrainedModel,
)

from configuration_gpt2edu import GPT2EduConfig
from tokenization_gpt2edu import (
    CHAT_TEMPLATE_FILE,
    check_vocabulary_ends_responses,
    gpt2_tokenizer,
    read_chat_template,
    save_gpt2_tokenizer,
)

from . import convert_maps as maps
from .cli import first_line, quiet_transformers
from .convert_sources import (  # noqa: F401  (same_bits: the converter's verification's, found here too)
    Source,
    check_dtype_range,
    describe_key_mismatch,
    empty_model,
    load_checkpoint_file,
    model_class_of,
    same_bits,
    seed_config_file,
)
from .files import atomic_write, check_output_dir, clean_stale_staging
from .hub import model_card, push_to_hub

# --- building the model --------------------------------------------------------------------------------------------


def build_model(source: Source, to: str = "gpt2edu", dtype: torch.dtype | None = None) -> PreTrainedModel:
    """A gpt2edu model (to="gpt2edu") or GPT2LMHeadModel (to="gpt2") whose parameters are the source's tensors.

    The model is built on the meta device and the tensors are assigned to it, not copied into it, so a memory-mapped
    checkpoint stays in its file until it is written out. A sequence classifier's source builds a
    GPT2EduForSequenceClassification.
    """
    state_dict = own_memory(source.state_dict)
    if dtype is not None:
        check_dtype_range(state_dict, dtype)
        state_dict = {name: tensor.to(dtype) for name, tensor in state_dict.items()}
    config, model_class = source.config, model_class_of(source.config)
    if to == "gpt2":
        state_dict = maps.gpt2edu_to_gpt2_state_dict(state_dict, config.n_layers)
        config, model_class = maps.gpt2edu_config_to_gpt2(config), GPT2LMHeadModel
    model = empty_model(model_class, config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()  # HF: assign gave the head and the embedding separate Parameters; tie them again
    return model.eval()


# --- where to write ------------------------------------------------------------------------------------------------


def check_output_folder(out_dir: Path, force: bool) -> None:
    """Refuse to write a folder where it would destroy something not asked to replace, or where it cannot be made.

    What a killed run left beside OUT is cleared first (a model it had set aside is moved back, and then counts).

    Raises:
        ValueError: If `out_dir` is a file, or a non-empty folder and `force` is not set.
        UsageError: If `out_dir` cannot be created or written (under /proc, on a read-only disk).
    """
    clean_stale_staging(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ValueError(f"{out_dir} exists and is not empty; pass --force to replace it")
    check_output_dir(out_dir, "OUT")


def check_output_file(out_file: Path, force: bool) -> None:
    """Refuse to write the seed checkpoint `out_file` (and its config) over something not asked to replace.

    Raises:
        ValueError: If OUT or OUT's .config.json is a folder, or exists and `force` is not set.
        UsageError: If `out_file`'s folder cannot be created or written.
    """
    clean_stale_staging(out_file)
    for path in (out_file, seed_config_file(out_file)):
        if path.is_dir():
            raise ValueError(f"{path} is a folder; a seed checkpoint is written as a .pth file")
        if path.exists() and not force:
            raise ValueError(f"{path} exists; pass --force to replace it")
    check_output_dir(out_file.parent if out_file.exists() else out_file, "OUT")


def full_disk_message(out: Path) -> str:
    return (
        f"no space left on the device while writing {out}; nothing was written (an earlier folder there is "
        "untouched): free some space and run again"
    )


# --- verifying -----------------------------------------------------------------------------------------------------


def compare_parameters(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: str) -> int:
    """Check that `loaded` holds exactly `expected`'s tensors, bit for bit; return how many were compared.

    Raises:
        RuntimeError: Naming the first tensor that is missing, extra or different.
    """
    missing, extra = sorted(expected.keys() - loaded.keys()), sorted(loaded.keys() - expected.keys())
    if missing or extra:
        raise RuntimeError(f"verification failed: {where} loads with {describe_key_mismatch(missing, extra)}")
    for name, tensor in expected.items():
        if not same_bits(loaded[name], tensor):
            raise RuntimeError(f"verification failed: {name} as loaded from {where} differs from its source")
    return len(expected)


def verify_loaded_model(folder: Path, model: PreTrainedModel) -> int:
    """Load `folder` as a user will (`AutoModelForCausalLM.from_pretrained`, a classifier's with
    `AutoModelForSequenceClassification`) and compare every parameter with `model`.

    Tied parameters are compared under each of their names, so a head that would load untied (and be freshly
    initialised) fails here. Returns the number of tensors compared.
    """
    auto_class = (
        AutoModelForSequenceClassification if maps.is_sequence_classifier(model.config) else AutoModelForCausalLM
    )
    with quiet_transformers():
        loaded, info = auto_class.from_pretrained(folder, dtype=model.dtype, output_loading_info=True)
    problems = {kind: keys for kind, keys in info.items() if keys and kind != "error_msgs"}
    if problems:
        kind, keys = next(iter(problems.items()))
        raise RuntimeError(
            f"verification failed: loading {folder} reports {kind.replace('_', ' ')} {sorted(keys)[:4]}"
        )
    expected = dict(model.state_dict())
    count = compare_parameters(dict(loaded.state_dict()), expected, str(folder))
    del loaded
    return count


# --- writing -------------------------------------------------------------------------------------------------------


def own_memory(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give every tensor contiguous memory of its own, as safetensors needs; the same tensor twice (a tie) stays one.

    Checkpoints may hold views: the book's safetensors loader leaves W_query, W_key and W_value as transposed chunks of
    one fused matrix. Such tensors are copied; a tensor that is already alone in its memory is kept as it is.
    """
    owners: dict[int, torch.Tensor] = {}
    out = {}
    for name, tensor in state_dict.items():
        storage = tensor.untyped_storage()
        alone = (
            tensor.is_contiguous()
            and tensor.storage_offset() == 0
            and storage.nbytes() == tensor.numel() * tensor.element_size()
        )
        owner = owners.setdefault(storage.data_ptr(), tensor)
        out[name] = tensor if alone and owner is tensor else tensor.clone(memory_format=torch.contiguous_format)
    return out


def write_model_files(
    folder: Path, model: PreTrainedModel, tokenizer=None, card: str | None = None, chat_template: str | None = None
) -> None:
    """Write what a model folder holds into `folder`.

    config.json, model.safetensors and generation_config.json (save_pretrained, which also copies the two code files
    of a gpt2edu model, as config.json's auto_map points at them), the tokenizer's files (GPT-2's when `tokenizer` is
    None: for a GPT-2 folder, the files OpenAI's `openai-community/gpt2` ships, which tools built for those folders
    read), the README.md model card when `card` is given, and chat_template.jinja when `chat_template` (its text) is.
    """
    model.save_pretrained(folder)
    if tokenizer is None:
        openai_layout = model.config.model_type == "gpt2"
        save_gpt2_tokenizer(folder, model.config.max_position_embeddings, openai_layout=openai_layout)
    else:
        tokenizer.save_pretrained(folder)
    if chat_template is not None:
        (folder / CHAT_TEMPLATE_FILE).write_text(chat_template, encoding="utf-8")
    if card is not None:
        (folder / "README.md").write_text(card)


def chat_template_for(source: Source, src: str, name: str | None) -> str | None:
    """The chat template a converted folder gets beside its tokenizer: template `name`'s, else SRC's own, or None.

    A local SRC folder's chat_template.jinja (an instruction model's) is kept: the tokenizer files are written anew.

    Raises:
        ValueError: For `name` on a classifier, or on a model whose vocabulary stops short of `<|endoftext|>`, the
            token that ends each response.
    """
    if name is None:
        own = Path(src) / CHAT_TEMPLATE_FILE
        return own.read_text(encoding="utf-8") if own.is_file() else None
    if maps.is_sequence_classifier(source.config):
        raise ValueError(
            f"--chat-template {name} is for a language model that follows instructions; {source.description} is a "
            "sequence classifier"
        )
    try:
        check_vocabulary_ends_responses(source.config.vocab_size)
    except ValueError as error:
        raise ValueError(f"--chat-template {name}: {error}") from None
    return read_chat_template(name)


def classifier_tokenizer(config):
    """GPT-2's tokenizer for a sequence classifier: `<|endoftext|>` pads, as the book pads its texts.

    A classifier reads each text's logits at one position, so batches of texts of different lengths are padded;
    pipeline("text-classification") needs the pad token to batch them.
    """
    tokenizer = gpt2_tokenizer(config.context_length)
    if config.pad_token_id is not None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(config.pad_token_id)
    return tokenizer


def save_model_folder(
    model: PreTrainedModel,
    out_dir: str | Path,
    tokenizer=None,
    model_card: str | None = None,
    force: bool = False,
    chat_template: str | None = None,
) -> int:
    """Write a complete, verified model folder, atomically (see `write_model_files` for what it holds).

    Args:
        model: The model to save.
        out_dir: The folder to create.
        tokenizer: The tokenizer to save with it; GPT-2's when None.
        model_card: Text of README.md; none is written when None.
        force: Replace an existing non-empty `out_dir`.
        chat_template: The text of chat_template.jinja, checked to be what `AutoTokenizer` loads; none when None.

    Returns:
        The number of tensors of the model loaded back from the folder, each verified to equal the source's.

    Raises:
        ValueError, UsageError: For an OUT that `check_output_folder` refuses, and (UsageError) for a full disk.
        RuntimeError: If the folder would not load as `model`.
    """
    out_dir = Path(out_dir)
    check_output_folder(out_dir, force)
    with atomic_write(out_dir, full_disk_message=full_disk_message(out_dir)) as staging:
        write_model_files(staging, model, tokenizer, model_card, chat_template)
        if chat_template is not None and AutoTokenizer.from_pretrained(staging).chat_template != chat_template:
            raise RuntimeError(f"{out_dir}'s tokenizer does not load the chat template written beside it")
        return verify_loaded_model(staging, model)


def write_seed_file(path: Path, state_dict: dict[str, torch.Tensor], fields: dict, where: str) -> int:
    """Write a seed checkpoint: `path` (a bare state dict, torch.save) and its config fields in PATH.config.json.

    `where` names the file in a verification error: the place it is written for, not the staging folder.

    Returns:
        The number of tensors in the file, each read back with `torch.load` and verified to equal `state_dict`'s (what
        the book's `load_state_dict(strict=True)` gets).
    """
    torch.save(state_dict, path)
    seed_config_file(path).write_text(json.dumps(fields, indent=2) + "\n")
    return compare_parameters(load_checkpoint_file(path), state_dict, where)


# --- describing and publishing -------------------------------------------------------------------------------------


def describe_model(config: GPT2EduConfig, n_params: int, dtype: torch.dtype) -> str:
    """'124.4M parameters: 12 layers, emb_dim 768, ...' in one line."""
    size = f"{n_params / 1e6:.1f}M" if n_params >= 1e6 else f"{n_params:,}"
    return (
        f"{size} parameters: {config.n_layers} layers, emb_dim {config.emb_dim}, {config.n_heads} "
        f"heads, context {config.context_length}, vocabulary {config.vocab_size}, "
        f"{head_description(config)}, {str(dtype).removeprefix('torch.')}"
    )


def head_description(config: GPT2EduConfig) -> str:
    """'tied output head', 'untied output head', or a classifier's 'classifier head of 2 outputs'."""
    if maps.is_sequence_classifier(config):
        return f"classifier head of {config.num_labels} outputs{' with a bias' if config.classifier_bias else ''}"
    return f"{'tied' if config.tie_word_embeddings else 'untied'} output head"


def conversion_model_card(source: Source, model: PreTrainedModel, to: str, repo_id: str) -> str:
    """The README.md of a converted folder: size, provenance and how to load it (`gpt2edu.hub.model_card`)."""
    summary = describe_model(source.config, sum(p.numel() for p in model.parameters()), model.dtype)
    kind = "language model"
    if maps.is_sequence_classifier(source.config):
        labels = ", ".join(source.config.id2label[i] for i in range(source.config.num_labels))
        kind = f"sequence classifier (labels {labels}; pooling {source.config.classifier_pooling})"
    description = f"""A GPT-2 {kind}, {summary}.

## Provenance

Converted by gpt2edu's `convert_checkpoint.py` from the {source.description}, to the {to} layout. After writing,
every tensor was read back and checked to equal its source bit for bit."""
    return model_card(repo_id, description, remote_code=to == "gpt2edu")


def push_folder(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload a written folder to the Hub (`gpt2edu.hub.push_to_hub`); return the repo's URL.

    Raises:
        OSError: Naming the first line of whatever went wrong (HTTP, connection, authentication); the folder stays.
    """
    try:
        return push_to_hub(folder, repo_id, private, message="Upload model from convert_checkpoint.py")
    except Exception as error:  # network edge: HTTP, connection and auth failures come in many types
        raise OSError(f"push to {repo_id} failed ({first_line(error)}); {folder} is complete") from error

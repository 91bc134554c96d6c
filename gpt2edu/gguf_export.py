"""Writing a gpt2edu model as a GGUF file: the one-file format llama.cpp, Ollama and LM Studio run.

A GGUF file holds metadata (keys and values: the architecture's sizes, the tokenizer) and named tensors. llama.cpp
knows GPT-2 as its `gpt2` architecture; its loader (`src/models/gpt2.cpp` in llama.cpp) asks for the tensors named in
the table below, and its own converter, `convert_hf_to_gguf.py`, writes them from a transformers GPT-2 folder. This
module writes the same file straight from gpt2edu's layout, with `gguf`, llama.cpp's own Python library for the format:
the name table first, then two pure maps (state dict -> GGUF tensors, config -> metadata), then the writer and its
check. tests/test_gguf.py compares what it writes with what llama.cpp's converter writes for the same model.

Shapes need no transposing: a GGUF tensor lists its dimensions innermost first, so PyTorch's (out, in) weight of an
nn.Linear is the (in, out) matrix llama.cpp multiplies with, as it is.
"""

import json
from pathlib import Path

import gguf
import numpy as np
import torch

from configuration_gpt2edu import GPT2EduConfig
from tokenization_gpt2edu import BPE_FOLDER, ENDOFTEXT

from .convert_outputs import compare_parameters, full_disk_message
from .convert_sources import check_dtype_range
from .files import atomic_write, check_output_dir, clean_stale_staging

ARCH = "gpt2"  # llama.cpp's name for GPT-2; its metadata keys start with it
GPT2_VOCAB_SIZE = 50257  # the tokens of GPT-2's tokenizer, which the file carries

# --- the name table: gpt2edu -> GGUF -------------------------------------------------------------------------------

TOP_NAMES = {
    "model.tok_emb.weight": "token_embd.weight",
    "model.pos_emb.weight": "position_embd.weight",
    "model.final_norm.scale": "output_norm.weight",
    "model.final_norm.shift": "output_norm.bias",
    "lm_head.weight": "output.weight",  # absent for a tied head: llama.cpp then uses token_embd
}
# Each block: the name under "model.trf_blocks.{i}." -> the name under "blk.{i}.". Query, key and value are one
# matrix in llama.cpp's GPT-2, as in OpenAI's: their rows stacked in that order.
BLOCK_NAMES = {
    "att.W_query.weight": "attn_qkv.weight",
    "att.W_key.weight": "attn_qkv.weight",
    "att.W_value.weight": "attn_qkv.weight",
    "att.W_query.bias": "attn_qkv.bias",
    "att.W_key.bias": "attn_qkv.bias",
    "att.W_value.bias": "attn_qkv.bias",
    "att.out_proj.weight": "attn_output.weight",
    "att.out_proj.bias": "attn_output.bias",
    "norm1.scale": "attn_norm.weight",
    "norm1.shift": "attn_norm.bias",
    "norm2.scale": "ffn_norm.weight",
    "norm2.shift": "ffn_norm.bias",
    "ff.layers.0.weight": "ffn_up.weight",
    "ff.layers.0.bias": "ffn_up.bias",
    "ff.layers.2.weight": "ffn_down.weight",
    "ff.layers.2.bias": "ffn_down.bias",
}
# The file types: the dtype of the big matrices. As llama.cpp's converter writes them, the vectors (biases, norms) and
# the position embedding always stay float32, whatever the file type.
FILE_TYPES = {
    torch.float32: gguf.LlamaFileType.ALL_F32,
    torch.float16: gguf.LlamaFileType.MOSTLY_F16,
    torch.bfloat16: gguf.LlamaFileType.MOSTLY_BF16,
}
ALWAYS_FLOAT32 = ("position_embd.weight",)
# The GGUF type of each kind of metadata value, as llama.cpp's converter writes them: a single integer unsigned, the
# items of a list of integers (the token types) signed.
VALUE_TYPES = {
    bool: gguf.GGUFValueType.BOOL,
    int: gguf.GGUFValueType.UINT32,
    float: gguf.GGUFValueType.FLOAT32,
    str: gguf.GGUFValueType.STRING,
}
LIST_ITEM_TYPES = {int: gguf.GGUFValueType.INT32, str: gguf.GGUFValueType.STRING}


def gguf_rename_table(n_layers: int) -> dict[str, str]:
    """gpt2edu name -> GGUF name, for every weight of a model with this many blocks (q, k and v share attn_qkv)."""
    table = dict(TOP_NAMES)
    for i in range(n_layers):
        table.update({f"model.trf_blocks.{i}.{ours}": f"blk.{i}.{name}" for ours, name in BLOCK_NAMES.items()})
    return table


# --- pure maps: tensors and metadata -------------------------------------------------------------------------------


def check_representable(config: GPT2EduConfig, dtype: torch.dtype) -> None:
    """Raise ValueError for a model llama.cpp cannot run from a GGUF file, naming why."""
    if dtype not in FILE_TYPES:
        raise ValueError(f"GGUF stores {', '.join(str(d).removeprefix('torch.') for d in FILE_TYPES)}, not {dtype}")
    if config.vocab_size < GPT2_VOCAB_SIZE:
        raise ValueError(
            f"the model's vocabulary has {config.vocab_size} tokens, fewer than the {GPT2_VOCAB_SIZE} of GPT-2's "
            "tokenizer, which a GGUF file carries: llama.cpp would look up token ids the model does not have"
        )


def gguf_tensors(
    state_dict: dict[str, torch.Tensor], config: GPT2EduConfig, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """A gpt2edu state dict as GGUF tensors (GGUF name -> tensor), each in the dtype the file stores it in.

    The matrices get `dtype`; vectors and the position embedding float32. A tied head is not written (llama.cpp
    uses the token embedding), and attention without qkv bias (the seed's default) gets a zero bias, which
    llama.cpp's GPT-2 requires and which computes the same thing.
    """
    stacked: dict[str, list[torch.Tensor]] = {}
    for ours, name in gguf_rename_table(config.n_layers).items():
        if name == "output.weight" and config.tie_word_embeddings:
            continue
        tensor = state_dict.get(ours)
        if tensor is None and ours.endswith(".bias"):  # a qkv bias the model does not have
            tensor = torch.zeros(config.emb_dim, dtype=state_dict["model.tok_emb.weight"].dtype)
        stacked.setdefault(name, []).append(tensor)
    out = {}
    for name, parts in stacked.items():
        tensor = torch.cat(parts) if len(parts) > 1 else parts[0]  # q, k and v rows, in the table's order
        matrix = tensor.dim() == 2 and name not in ALWAYS_FLOAT32
        out[name] = tensor.to(dtype if matrix else torch.float32).contiguous()
    return out


def gpt2_vocabulary(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """GPT-2's tokenizer as llama.cpp reads it: the tokens by id, each token's type, and OpenAI's merges.

    A model with more ids than GPT-2's 50257 (a vocabulary padded to a multiple of 64, say) gets placeholder tokens
    of type UNUSED for the rest, as llama.cpp's converter writes them.
    """
    encoder = json.loads((BPE_FOLDER / "encoder.json").read_text(encoding="utf-8"))  # token -> id
    tokens = sorted(encoder, key=encoder.get)
    types = [gguf.TokenType.CONTROL if token == ENDOFTEXT else gguf.TokenType.NORMAL for token in tokens]
    tokens += [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
    types += [gguf.TokenType.UNUSED] * (vocab_size - len(types))
    lines = (BPE_FOLDER / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [line for line in lines[1:] if line]  # "a b" per line, after the "#version" line
    return tokens, [int(kind) for kind in types], merges


def gguf_metadata(config: GPT2EduConfig, dtype: torch.dtype, name: str) -> dict[str, object]:
    """The metadata llama.cpp reads for a GPT-2: key -> value (stored as the GGUF type `value_type` gives)."""
    tokens, token_types, merges = gpt2_vocabulary(config.vocab_size)
    endoftext = tokens.index(ENDOFTEXT)
    return {
        "general.type": "model",
        "general.name": name,
        "general.file_type": int(FILE_TYPES[dtype]),
        "general.quantization_version": gguf.GGML_QUANT_VERSION,
        f"{ARCH}.block_count": config.n_layers,
        f"{ARCH}.context_length": config.context_length,
        f"{ARCH}.embedding_length": config.emb_dim,
        f"{ARCH}.feed_forward_length": 4 * config.emb_dim,
        f"{ARCH}.attention.head_count": config.n_heads,
        f"{ARCH}.attention.layer_norm_epsilon": float(np.float32(config.layer_norm_eps)),  # as stored: float32
        "tokenizer.ggml.model": "gpt2",  # byte-level BPE
        "tokenizer.ggml.pre": "gpt-2",  # GPT-2's split pattern, before the merges
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": token_types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": endoftext,
        "tokenizer.ggml.eos_token_id": endoftext,
        "tokenizer.ggml.add_bos_token": False,  # GPT-2 adds no token around a text
        "tokenizer.ggml.add_eos_token": False,
    }


def value_type(value: object) -> tuple[gguf.GGUFValueType, gguf.GGUFValueType | None]:
    """The GGUF type of a metadata value, and of its items for a list."""
    if isinstance(value, list):
        return gguf.GGUFValueType.ARRAY, LIST_ITEM_TYPES[type(value[0])]
    return VALUE_TYPES[type(value)], None


# --- writing and reading back --------------------------------------------------------------------------------------


def write_gguf(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, object]) -> None:
    """Write a GGUF file of llama.cpp's gpt2 architecture: the header, the metadata, then the tensors."""
    writer = gguf.GGUFWriter(path, arch=ARCH)  # writes general.architecture
    for key, value in metadata.items():
        writer.add_key_value(key, value, *value_type(value))
    for name, tensor in tensors.items():
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: its bits, stored as BF16
            writer.add_tensor(name, tensor.view(torch.int16).numpy(), raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor(name, tensor.numpy())
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def read_gguf(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Read a GGUF file's tensors (name -> tensor, PyTorch's shapes) and metadata (key -> value).

    The tensors view the memory-mapped file (copy-on-write: changing one leaves the file as it is).
    """
    reader = gguf.GGUFReader(path, mode="c")
    tensors = {}
    for info in reader.tensors:
        shape = tuple(int(n) for n in reversed(info.shape))  # GGUF lists the innermost dimension first
        data = torch.from_numpy(info.data)
        if info.tensor_type == gguf.GGMLQuantizationType.BF16:  # the reader gives BF16 as raw bytes
            data = data.view(torch.bfloat16)
        tensors[info.name] = data.reshape(shape)
    metadata = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    return tensors, metadata


def check_output_file(out_file: Path, force: bool) -> None:
    """Refuse a GGUF OUT that does not end in .gguf, is a folder, or exists without `force`."""
    if out_file.suffix != ".gguf":
        raise ValueError(
            f"--to gguf writes one .gguf file, but OUT is {str(out_file)!r}: name it e.g. {out_file}.gguf"
        )
    clean_stale_staging(out_file)
    if out_file.is_dir():
        raise ValueError(f"{out_file} is a folder; --to gguf writes one .gguf file")
    if out_file.exists() and not force:
        raise ValueError(f"{out_file} exists; pass --force to replace it")
    check_output_dir(out_file.parent if out_file.exists() else out_file, "OUT")


def save_gguf(
    state_dict: dict[str, torch.Tensor],
    config: GPT2EduConfig,
    out_file: str | Path,
    dtype: torch.dtype | None = None,
    force: bool = False,
) -> int:
    """Write a gpt2edu model as a GGUF file, verified, atomically.

    Args:
        state_dict: The model's tensors in gpt2edu's layout.
        config: Its config.
        out_file: The .gguf file to write.
        dtype: The matrices' dtype: float32, float16 or bfloat16 (default: the model's own).
        force: Replace an existing `out_file`.

    Returns:
        The number of tensors in the file, each read back with gguf's GGUFReader and verified to equal, bit for bit,
        the model's tensor at the dtype the file stores it in.

    Raises:
        ValueError: For a model llama.cpp cannot run (`check_representable`), or an OUT `check_output_file` refuses.
        UsageError: For a full disk.
    """
    out_file = Path(out_file)
    dtype = dtype or state_dict["model.tok_emb.weight"].dtype
    check_representable(config, dtype)
    check_output_file(out_file, force)
    check_dtype_range(state_dict, dtype)
    tensors = gguf_tensors(state_dict, config, dtype)
    metadata = gguf_metadata(config, dtype, out_file.stem)
    with atomic_write(out_file, file=True, full_disk_message=full_disk_message(out_file)) as staging:
        write_gguf(staging / out_file.name, tensors, metadata)
        return verify_gguf(staging / out_file.name, tensors, metadata, where=str(out_file))


def verify_gguf(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, object], where: str) -> int:
    """Read a written GGUF file back with gguf's GGUFReader; check its tensors bit for bit and its metadata.

    Returns:
        The number of tensors compared.

    Raises:
        RuntimeError: Naming the first tensor or metadata key that differs from what was meant to be written.
    """
    written, written_metadata = read_gguf(path)
    count = compare_parameters(written, tensors, where)
    changed = [key for key, value in metadata.items() if written_metadata.get(key) != value]
    if changed or written_metadata.get("general.architecture") != ARCH:
        raise RuntimeError(f"verification failed: {where} reads back with other metadata: {changed[:3]}")
    return count  # the file's memory map is released here, before the file is moved into place

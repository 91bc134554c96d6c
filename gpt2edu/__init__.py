"""gpt2edu's library: what the programs share, kept beside them so that each program opens with its core.

- `cli`: one-line errors and exit codes, the argparse that reports in one line, quiet library logs.
- `files`: the output-folder check and the one "write elsewhere, then publish" helper every writer uses.
- `loading`: the device, and loading a model folder or Hub id with its weights checked.
- `generation`: continuing a prompt with generate(), past the context like the seed (run_inference.py's core).
- `hub`: the model card and the upload (huggingface_hub's `ModelCard` and `upload_folder`).
- `train_args`, `train_data`, `train_checkpoints`, `train_guards`, `train_report`: beside train_accelerate.py's loop,
  its flags, corpus, checkpoints, guards (output folder, stop signals, divergence, full disk) and reports.
- `convert_maps`: convert_checkpoint.py's name tables and pure maps (seed <-> gpt2edu <-> GPT-2), which the seed's API
  and every program reading a .pth file share; `convert_sources`, `convert_outputs`: beside them, reading and
  checking what the converter converts, and building, writing and verifying what it produces; `gguf_export`: the
  GGUF file llama.cpp runs.
- `transformer_lens_adapter`: TransformerLens' architecture adapter for gpt2edu models (`TransformerBridge`).
- `seed`: the seed's public functions by their names (`create_dataloader_v1`, `train_model_simple`, ...), also
  importable from here: `from gpt2edu import train_model_simple`. They are imported on first use, so that the
  programs, which import this package, do not load them.
"""

SEED_API = (
    "get_device",
    "generate_tokens_greedy",
    "encode_text_to_token_ids",
    "decode_token_ids_to_text",
    "load_checkpoint_state_dict",
    "generate_response_from_prompt",
    "GPTDatasetV1",
    "create_dataloader_v1",
    "calc_loss_batch",
    "calc_loss_loader",
    "evaluate_model",
    "generate_and_print_sample",
    "train_model_simple",
    "save_checkpoint",
    "load_checkpoint",
    "train",
)


def __getattr__(name: str):
    """`from gpt2edu import create_dataloader_v1`: the seed's names, from gpt2edu/seed.py when first asked for."""
    if name in SEED_API:
        from . import seed

        return getattr(seed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")  # also lets submodules import normally


def __dir__() -> list[str]:
    return sorted([*globals(), *SEED_API])

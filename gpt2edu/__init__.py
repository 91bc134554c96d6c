"""gpt2edu's library: what the programs share, kept beside them so that each program opens with its core.

- `cli`: one-line errors and exit codes, the argparse that reports in one line, quiet library logs.
- `files`: the output-folder check and the one "write elsewhere, then publish" helper every writer uses.
- `loading`: the device, and loading a model folder or Hub id with its weights checked.
- `hub`: the model card and the upload (huggingface_hub's `ModelCard` and `upload_folder`).
"""

"""The Hugging Face Hub's side of the programs: the model card of a written folder, and the upload.

Both are huggingface_hub's own: `ModelCard` (metadata header and text) and `HfApi.upload_folder` (one commit).
"""

from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData

USE_REMOTE = (
    "gpt2edu's own code (`modeling_gpt2edu.py`, `configuration_gpt2edu.py`) is in this repository, so "
    "`trust_remote_code=True` loads it without installing anything."
)
TOKENIZER = "The tokenizer is GPT-2's byte-level BPE, with exactly tiktoken's `gpt2` token ids."
USE_GPT2 = "It is a plain transformers `GPT2LMHeadModel`: any tool that serves GPT-2 serves it, no custom code."


def model_card(repo_id: str, description: str, remote_code: bool = True) -> str:
    """The README.md of a model folder: metadata for the Hub, what the model is, and how to load it.

    Args:
        repo_id: The model's name (a Hub id, or the folder's name), the card's title.
        description: Paragraphs on what the model is and where it comes from (Markdown).
        remote_code: Whether loading needs `trust_remote_code=True` (gpt2edu folders), or not (GPT-2 folders).
    """
    data = ModelCardData(library_name="transformers", pipeline_tag="text-generation", tags=["gpt2edu", "gpt2"])
    remote = ", trust_remote_code=True" if remote_code else ""
    text = f"""---
{data.to_yaml()}
---

# {repo_id}

{description}

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{repo_id}"{remote})
tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
```

{USE_REMOTE if remote_code else USE_GPT2} {TOKENIZER}
"""
    return str(ModelCard(text))


def push_to_hub(
    folder: Path,
    repo_id: str,
    private: bool = False,
    message: str = "Upload model",
    ignore_patterns: list[str] | None = None,
) -> str:
    """Upload every file of `folder` to the Hub model repo `repo_id` in one commit; return the repo's URL.

    `ignore_patterns` (upload_folder's) leaves matching paths out, e.g. ["*/*"] for the files of subfolders.
    """
    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=message, ignore_patterns=ignore_patterns
    )
    return str(url)

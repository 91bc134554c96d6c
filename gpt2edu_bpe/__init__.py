"""GPT-2's byte-pair encoding files, shipped with gpt2edu so that its tokenizer works offline (see LICENSE)."""

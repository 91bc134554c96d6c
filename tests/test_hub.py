"""The model as a Hugging Face citizen: save/load, Auto classes, remote code, pipeline and Trainer."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config
from test_model import greedy_reference
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    Trainer,
    TrainingArguments,
    pipeline,
)

from modeling_gpt2edu import GPT2EduForCausalLM, GPT2EduModel

PROJECT_MODULES = ["modeling_gpt2edu", "configuration_gpt2edu", "tokenization_gpt2edu", "convert_checkpoint"]


def test_save_pretrained_writes_a_complete_folder(saved_model):
    _, folder = saved_model
    files = set(os.listdir(folder))
    expected = {"config.json", "model.safetensors", "generation_config.json", "modeling_gpt2edu.py"}
    assert expected | {"configuration_gpt2edu.py", "tokenizer.json", "tokenizer_config.json"} <= files
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gpt2edu"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_gpt2edu.GPT2EduConfig",
        "AutoModel": "modeling_gpt2edu.GPT2EduModel",
        "AutoModelForCausalLM": "modeling_gpt2edu.GPT2EduForCausalLM",
        "AutoModelForSequenceClassification": "modeling_gpt2edu.GPT2EduForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_gpt2edu.GPT2EduForTokenClassification",
        "AutoModelForQuestionAnswering": "modeling_gpt2edu.GPT2EduForQuestionAnswering",
    }


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_through_the_auto_classes(tmp_path, tie):
    torch.manual_seed(0)
    model = GPT2EduForCausalLM(tiny_config(tie_word_embeddings=tie)).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is GPT2EduForCausalLM
    assert (loaded.out_head.weight is loaded.model.tok_emb.weight) == tie
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    input_ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, model(input_ids).logits)
        body = AutoModel.from_pretrained(tmp_path).eval()
        assert type(body) is GPT2EduModel
        assert torch.equal(body(input_ids).last_hidden_state, model.model(input_ids).last_hidden_state)


def test_hub_user_loads_with_trust_remote_code_without_the_project(saved_model, tokenizer, tmp_path):
    """A user who has transformers but not gpt2edu: the folder's own code files must be enough."""
    model, folder = saved_model
    text = "Hello, remote code! <|endoftext|> 123"
    input_ids = torch.tensor([tokenizer(text).input_ids])
    with torch.no_grad():
        torch.save({"input_ids": input_ids, "logits": model(input_ids).logits}, tmp_path / "expected.pt")
    script = f"""
import sys
sys.modules.update({{name: None for name in {PROJECT_MODULES!r}}})  # the project cannot be imported here
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=True)
expected = torch.load("expected.pt")
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
assert tokenizer({text!r}).input_ids == expected["input_ids"][0].tolist()
with torch.no_grad():
    torch.testing.assert_close(model(expected["input_ids"]).logits, expected["logits"])
print("remote code OK")
"""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["TIKTOKEN_CACHE_DIR"] = str(tmp_path / "empty-tiktoken-cache")  # no tiktoken files: the folder suffices
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf-modules")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout


def test_text_generation_pipeline_on_a_saved_folder(saved_model, tokenizer):
    model, folder = saved_model
    generator = pipeline("text-generation", model=str(folder))
    assert type(generator.model) is GPT2EduForCausalLM
    prompt = "Every effort moves you"
    result = generator(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    expected = greedy_reference(model, torch.tensor([tokenizer(prompt).input_ids]), 8)
    assert result == tokenizer.decode(expected[0])


def test_transformers_trainer_fine_tunes_the_model(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = GPT2EduForCausalLM(tiny_config(vocab_size=50257, bos_token_id=50256, eos_token_id=50256))
    ids = tokenizer("I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough").input_ids
    dataset = [{"input_ids": ids, "labels": ids}] * 16

    def loss_on_data() -> float:
        with torch.no_grad():
            return model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()

    before = loss_on_data()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=12,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=4,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3 and all(torch.isfinite(torch.tensor(logged)))
    model.eval()
    assert loss_on_data() < before - 1.0

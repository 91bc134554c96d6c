"""PEFT's LoRA on gpt2edu: PEFT does not know the model type, so the README names the target modules."""

import pytest
import torch
from conftest import tiny_config

peft = pytest.importorskip("peft", reason="PEFT is a dev extra (pip install -e '.[dev]')")

from modeling_gpt2edu import GPT2EduForCausalLM  # noqa: E402


@pytest.mark.parametrize("target_modules", [["W_query", "W_value"], "all-linear"])
def test_lora_with_the_readmes_target_modules_trains_only_the_adapters(target_modules):
    torch.manual_seed(0)
    model = GPT2EduForCausalLM(tiny_config())
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=target_modules, task_type="CAUSAL_LM")
    lora = peft.get_peft_model(model, config)
    trainable = [name for name, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert any("W_query" in name for name in trainable) and any("W_value" in name for name in trainable)
    input_ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():  # LoRA's B starts at zero: the adapted model computes what the model did
        adapted = lora(input_ids).logits
        with lora.disable_adapter():
            torch.testing.assert_close(adapted, lora(input_ids).logits)
    loss = lora(input_ids, labels=input_ids).loss
    loss.backward()
    assert all(p.grad is not None for p in lora.parameters() if p.requires_grad)

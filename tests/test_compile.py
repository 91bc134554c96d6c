"""torch.compile'd training step: the same loss and gradients as eager (what `train_accelerate.py --compile` runs)."""

import pytest
import torch
from conftest import tiny_config

from modeling_gpt2edu import GPT2EduForCausalLM


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_compiled_training_step_equals_eager(tied):
    torch.manual_seed(0)
    eager = GPT2EduForCausalLM(tiny_config(tie_word_embeddings=tied, drop_rate=0.0)).train()
    compiled = GPT2EduForCausalLM(tiny_config(tie_word_embeddings=tied, drop_rate=0.0)).train()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()  # in place, as the trainer does it: the parameter names stay the same
    input_ids = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(1))
    for step in range(2):  # the second step runs the already compiled graph
        losses = []
        for model in (eager, compiled):
            model.zero_grad()
            loss = model(input_ids=input_ids, labels=input_ids).loss
            loss.backward()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
        grads = dict(compiled.named_parameters())
        for name, param in eager.named_parameters():
            torch.testing.assert_close(grads[name].grad, param.grad, rtol=1e-4, atol=1e-5, msg=f"{name}, step {step}")

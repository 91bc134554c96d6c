"""ONNX: a gpt2edu model exported with `torch.onnx.export(..., dynamo=True)` computes PyTorch's logits in onnxruntime.

The export the README shows: the model as it is, `use_cache=False` (no cache in the graph: onnxruntime is given the
whole sequence), batch and sequence length dynamic. Skipped, saying why, where onnxruntime, onnx or onnxscript (what
the dynamo exporter writes with) are not installed: `pip install -e ".[dev]"` installs them.
"""

import pytest
import torch
from conftest import tiny_config

from modeling_gpt2edu import GPT2EduForCausalLM

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
pytest.importorskip("onnx", reason="onnx is not installed: torch.onnx.export(dynamo=True) needs it")
pytest.importorskip("onnxscript", reason="onnxscript is not installed: torch.onnx.export(dynamo=True) needs it")


def export(model: GPT2EduForCausalLM, path) -> None:
    """The model to ONNX, as the README says: input_ids in, logits out, any batch size and length."""
    example = torch.randint(0, model.config.vocab_size, (2, 8))
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=model.config.context_length)
    torch.onnx.export(
        model,
        (example,),
        path,
        kwargs={"use_cache": False},
        dynamo=True,
        input_names=["input_ids"],
        output_names=["logits"],
        dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "use_cache": None},
    )


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_onnxruntime_computes_pytorchs_logits_and_greedy_text(tmp_path, tied):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=50257, bos_token_id=50256, eos_token_id=50256, tie_word_embeddings=tied)
    model = GPT2EduForCausalLM(config).eval()
    export(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(tmp_path / "model.onnx", providers=["CPUExecutionProvider"])

    for shape in [(1, 5), (3, config.context_length)]:  # other shapes than the example's
        input_ids = torch.randint(0, config.vocab_size, shape)
        (logits,) = session.run(["logits"], {"input_ids": input_ids.numpy()})
        with torch.no_grad():
            expected = model(input_ids, use_cache=False).logits
        torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)

    prompt = torch.tensor([[6109, 3626, 6100, 345]])  # "Every effort moves you"
    ids = prompt
    for _ in range(10):  # greedy, the whole sequence each step
        (logits,) = session.run(["logits"], {"input_ids": ids.numpy()})
        ids = torch.cat([ids, torch.tensor([[int(logits[0, -1].argmax())]])], dim=1)
    expected = model.generate(prompt, max_new_tokens=10, do_sample=False, pad_token_id=50256)
    assert ids.tolist() == expected.tolist()

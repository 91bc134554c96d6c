"""TRL's SFTTrainer on gpt2edu with packing and padding-free batches: it trains, and packed documents stay apart."""

import math

import pytest
import torch
from conftest import tiny_config

trl = pytest.importorskip("trl", reason="TRL is a dev extra (pip install -e '.[dev]')")
datasets = pytest.importorskip("datasets")

from modeling_gpt2edu import GPT2EduForCausalLM  # noqa: E402

TEXTS = [
    "Every effort moves you forward.",
    "The quick brown fox jumps over the lazy dog, and the dog does not mind at all.",
    "To be, or not to be: that is the question.",
    "I had always thought Jack Gisburn rather a cheap genius.",
    "A short one.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
] * 4


def sft_trainer(tmp_path, tokenizer, max_length=48, **options):
    torch.manual_seed(0)
    model = GPT2EduForCausalLM(tiny_config(vocab_size=50257, bos_token_id=50256, eos_token_id=50256))
    args = trl.SFTConfig(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, max_length=max_length,
        learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, **options,
    )  # fmt: skip
    tokenizer.pad_token = tokenizer.eos_token
    dataset = datasets.Dataset.from_dict({"text": TEXTS})
    return trl.SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


PACKED = [dict(packing=True), dict(padding_free=True, max_length=None)]


@pytest.mark.parametrize("options", PACKED, ids=["packing", "padding_free"])
def test_sft_trainer_trains_and_packed_rows_keep_documents_apart(tmp_path, tokenizer, options):
    trainer = sft_trainer(tmp_path, tokenizer, **options)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch  # several documents in one row
    model = trainer.model.eval()
    positions = batch["position_ids"][0]
    starts = [i for i in range(len(positions)) if positions[i] == 0] + [len(positions)]
    assert len(starts) > 2
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            alone = model(input_ids=batch["input_ids"][:, a:b]).logits[0]
            torch.testing.assert_close(packed[a:b], alone)

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    assert any(not torch.equal(p, before[name]) for name, p in model.named_parameters())

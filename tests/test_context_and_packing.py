"""Generation past the context (like the seed's loop), and documents packed into one row (TRL, serving engines)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from seed_reference import generate_text_simple, seed_model
from transformers import AttentionInterface, DynamicCache

from modeling_gpt2edu import GPT2EduForCausalLM

CONTEXT = 32  # the seed reference's context_length


def gpt2edu_from_seed(seed) -> GPT2EduForCausalLM:
    """The same weights in gpt2edu: the seed's names under `model.` (the head aside), less the mask buffers."""
    config = tiny_config(context_length=CONTEXT, n_heads=4, emb_dim=32, vocab_size=101)
    model = GPT2EduForCausalLM(config).eval()
    state_dict = {
        (name if name.startswith("out_head") else f"model.{name}"): tensor
        for name, tensor in seed.state_dict().items()
        if not name.endswith("att.mask")
    }
    model.load_state_dict(state_dict, strict=True)
    return model


@pytest.fixture(scope="module")
def models():
    seed = seed_model(seed=3)
    return seed, gpt2edu_from_seed(seed)


# --- past the context ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt_length, new_tokens", [(10, 40), (CONTEXT, 5), (45, 12)])
def test_greedy_generate_past_the_context_equals_the_seed_loop(models, prompt_length, new_tokens):
    seed, model = models
    prompt = torch.randint(0, 100, (1, prompt_length), generator=torch.Generator().manual_seed(prompt_length))
    expected = generate_text_simple(seed, prompt, new_tokens, context_size=CONTEXT)
    with torch.no_grad():
        generated = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, pad_token_id=100)
    assert generated.shape[1] == prompt_length + new_tokens > CONTEXT
    assert torch.equal(generated, expected)


def test_batched_left_padded_generate_past_the_context_equals_each_prompt_alone(models):
    seed, model = models
    prompts = [torch.randint(0, 100, (1, n), generator=torch.Generator().manual_seed(n)) for n in (6, 13)]
    width = max(p.shape[1] for p in prompts)
    input_ids = torch.stack([F.pad(p[0], (width - p.shape[1], 0), value=100) for p in prompts])
    attention_mask = torch.stack([F.pad(torch.ones(p.shape[1]), (width - p.shape[1], 0)) for p in prompts]).long()
    with torch.no_grad():
        generated = model.generate(
            input_ids, attention_mask=attention_mask, max_new_tokens=30, do_sample=False, pad_token_id=100
        )
    for row, prompt in enumerate(prompts):
        alone = generate_text_simple(seed, prompt, 30, context_size=CONTEXT)
        assert torch.equal(generated[row, width:], alone[0, prompt.shape[1] :]), row


def test_sampling_with_one_candidate_past_the_context_is_greedy(models):
    seed, model = models
    prompt = torch.randint(0, 100, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        sampled = model.generate(prompt, max_new_tokens=25, do_sample=True, top_k=1, pad_token_id=100)
    assert torch.equal(sampled, generate_text_simple(seed, prompt, 25, context_size=CONTEXT))


def test_beam_search_past_the_context_scores_its_beams_on_the_window(models):
    _, model = models
    prompt = torch.randint(0, 100, (1, 28), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model.generate(
            prompt, max_new_tokens=10, min_new_tokens=10, num_beams=3, do_sample=False, pad_token_id=100,
            output_scores=True, return_dict_in_generate=True, length_penalty=0.0,
        )  # fmt: skip
        sequence = out.sequences[0]
        assert sequence.shape[0] == 38 and torch.equal(sequence[:28], prompt[0])
        # The beam's score is the sum of its tokens' log-probabilities, each scored on the last CONTEXT tokens.
        total = 0.0
        for t in range(28, 38):
            window = sequence[max(0, t - CONTEXT) : t][None]
            total += torch.log_softmax(model(window, use_cache=False).logits[0, -1], -1)[sequence[t]].item()
    assert out.sequences_scores[0].item() == pytest.approx(total, abs=1e-4)


# --- packed documents -----------------------------------------------------------------------------------------------


def packed_row(lengths: list[int], seed: int = 0):
    """Documents of the given lengths, one after the other in one row, with positions restarting at 0 for each."""
    generator = torch.Generator().manual_seed(seed)
    documents = [torch.randint(0, 100, (n,), generator=generator) for n in lengths]
    input_ids = torch.cat(documents)[None]
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    cu_seq_lens = F.pad(torch.tensor(lengths).cumsum(0), (1, 0)).int()
    return documents, input_ids, position_ids, cu_seq_lens


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("lengths", [[9, 14], [20, 25, 7]])  # the second row (52 tokens) is longer than the context
def test_packed_documents_do_not_attend_to_each_other(models, attn_implementation, lengths):
    _, model = models
    model.set_attn_implementation(attn_implementation)
    documents, input_ids, position_ids, cu_seq_lens = packed_row(lengths)
    with torch.no_grad():
        packed = model(input_ids, position_ids=position_ids).logits[0]
        by_lengths = model(input_ids, cu_seq_lens_q=cu_seq_lens, cu_seq_lens_k=cu_seq_lens).logits[0]
        alone = torch.cat([model(doc[None]).logits[0] for doc in documents])
    model.set_attn_implementation("sdpa")
    torch.testing.assert_close(packed, alone)
    torch.testing.assert_close(by_lengths, alone)  # flash attention's lengths alone give the same positions


def test_the_context_check_looks_at_positions_not_row_length(models):
    _, model = models
    _, input_ids, position_ids, _ = packed_row([30, 30])
    model(input_ids, position_ids=position_ids)  # 60 tokens in the row, none past position 29
    with pytest.raises(ValueError, match="context_length"):
        model(input_ids, position_ids=torch.arange(60)[None])


def test_transformers_keyword_arguments_are_taken_and_unknown_ones_refused(models):
    _, model = models
    input_ids = torch.randint(0, 100, (1, 8))
    with torch.no_grad():
        plain = model(input_ids).logits
        taken = model(input_ids, max_length_q=8, max_length_k=8, is_causal=True, output_router_logits=False).logits
    torch.testing.assert_close(taken, plain)
    with pytest.raises(TypeError, match="attention_instances"):
        model(input_ids, attention_instances={})  # only a custom attention function may take arguments of its own
    with pytest.raises(ValueError, match="is_causal"):
        model(input_ids, is_causal=False)


def test_called_as_vllms_transformers_backend_calls_it(models):
    """vLLM's backend: the base model from AutoModel, its own attention function registered in AttentionInterface,
    every sequence of a batch packed into one row with positions restarting, and keyword arguments of its own."""
    _, model = models
    documents, input_ids, position_ids, cu_seq_lens = packed_row([11, 17, 9], seed=4)
    seen = {}

    def serving_engine_attention(module, q, k, v, attention_mask, scaling=None, dropout=0.0, **kwargs):
        # A stand-in for the engine's kernel: it ignores any mask and attends within each sequence, using its own
        # metadata; transformers' contract is (batch, n_heads, seq, head_dim) in, (batch, seq, n_heads, head_dim) out.
        seen.update(mask=attention_mask, kwargs=set(kwargs))
        bounds = kwargs["attention_instances"]["cu_seq_lens"].tolist()
        parts = [
            F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], is_causal=True, scale=scaling)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        return torch.cat(parts, dim=2).transpose(1, 2), None

    AttentionInterface.register("serving_engine_stand_in", serving_engine_attention)
    body = model.model
    body.config._attn_implementation = "serving_engine_stand_in"
    try:
        with torch.no_grad():
            hidden = body(
                input_ids=input_ids, position_ids=position_ids, use_cache=False, return_dict=False,
                attention_instances={"cu_seq_lens": cu_seq_lens},
            )[0]  # fmt: skip
    finally:
        body.config._attn_implementation = "sdpa"
    assert seen["mask"] is None and {"attention_instances", "position_ids"} <= seen["kwargs"]
    with torch.no_grad():
        alone = torch.cat([model.model(doc[None]).last_hidden_state[0] for doc in documents])
    torch.testing.assert_close(hidden[0], alone)


def test_a_cache_of_a_finished_prompt_still_gives_plain_causal_steps(models):
    """An empty cache must not stop the mask builder from seeing packed documents, nor a full one break decoding."""
    _, model = models
    input_ids = torch.randint(0, 100, (1, 12))
    with torch.no_grad():
        full = model(input_ids).logits
        cache = DynamicCache(config=model.config)
        first = model(input_ids[:, :7], cache=cache).logits
        rest = model(input_ids[:, 7:], cache=cache).logits
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full)

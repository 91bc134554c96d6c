"""The model: GPT-2's numbers, transformers' generation machinery, and the seed's names."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from transformers import GPT2Config, GPT2LMHeadModel, StaticCache

from configuration_gpt2edu import GPT2EduConfig
from convert_checkpoint import gpt2_config_to_gpt2edu, gpt2_to_gpt2edu_state_dict
from modeling_gpt2edu import GPT2EduForCausalLM, GPT2EduModel


def make_model(seed: int = 0, dtype=torch.float32, **overrides) -> GPT2EduForCausalLM:
    torch.manual_seed(seed)
    model = GPT2EduForCausalLM(tiny_config(**overrides)).to(dtype).eval()
    model.generation_config.eos_token_id = None  # let every run generate exactly max_new_tokens
    return model


def greedy_reference(model, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """The seed's generate_text_simple: recompute the whole sequence each step and take the argmax."""
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(input_ids, use_cache=False).logits[:, -1, :]
        input_ids = torch.cat([input_ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return input_ids


# --- the config ---------------------------------------------------------------------------------------------------


def test_config_defaults_are_the_seeds():
    config = GPT2EduConfig()
    seed = dict(
        vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12, n_layers=12, drop_rate=0.1, qkv_bias=False
    )
    assert {name: getattr(config, name) for name in seed} == seed
    assert config.tie_word_embeddings is False
    assert config.bos_token_id == config.eos_token_id == 50256
    assert config.model_type == "gpt2edu"


def test_config_standard_names_are_aliases():
    config = GPT2EduConfig(hidden_size=64, num_attention_heads=8, num_hidden_layers=3, max_position_embeddings=128)
    assert (config.emb_dim, config.n_heads, config.n_layers, config.context_length) == (64, 8, 3, 128)
    config.num_hidden_layers = 5
    assert config.n_layers == 5 and config.num_hidden_layers == 5
    assert GPT2EduConfig.from_dict(config.to_dict()).n_layers == 5


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(emb_dim=100, n_heads=12), "emb_dim"),
        (dict(n_layers=0), "n_layers"),
        (dict(vocab_size=-3), "vocab_size"),
        (dict(context_length=0), "context_length"),
        (dict(n_heads=0), "n_heads"),
        (dict(drop_rate=1.0), "drop_rate"),
        (dict(drop_rate=-0.1), "drop_rate"),
    ],
)
def test_invalid_config_is_refused(overrides, field):
    with pytest.raises(ValueError, match=field):
        GPT2EduConfig(**overrides)


# --- GPT-2's numbers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_logits_match_transformers_gpt2(tie, attn_implementation):
    torch.manual_seed(0)
    gpt2_config = GPT2Config(
        vocab_size=101,
        n_positions=64,
        n_embd=48,
        n_head=4,
        n_layer=3,
        tie_word_embeddings=tie,
        bos_token_id=0,
        eos_token_id=0,
    )
    reference = GPT2LMHeadModel(gpt2_config).eval()
    config = gpt2_config_to_gpt2edu(gpt2_config)
    model = GPT2EduForCausalLM._from_config(config, attn_implementation=attn_implementation).eval()
    model.load_state_dict(gpt2_to_gpt2edu_state_dict(reference.state_dict(), config.n_layers), strict=True)
    assert (model.out_head.weight is model.model.tok_emb.weight) == tie

    input_ids = torch.randint(0, 101, (3, 40))
    with torch.no_grad():
        expected = reference(input_ids).logits
        actual = model(input_ids).logits
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_loss_is_shifted_cross_entropy_with_ignore_index():
    model = make_model()
    input_ids = torch.randint(0, 101, (2, 12))
    labels = input_ids.clone()
    labels[0, :4] = -100
    output = model(input_ids, labels=labels)
    logits = output.logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 101), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)


def test_initialisation_is_gpt2s():
    model = GPT2EduForCausalLM(tiny_config(emb_dim=256, n_layers=8, vocab_size=2000))
    block = model.model.trf_blocks[0]
    assert abs(block.att.W_query.weight.std().item() - 0.02) < 0.002
    residual_std = 0.02 / (2 * 8) ** 0.5
    assert abs(block.att.out_proj.weight.std().item() - residual_std) < 0.001
    assert abs(block.ff.layers[2].weight.std().item() - residual_std) < 0.001
    assert torch.all(block.ff.layers[0].bias == 0) and torch.all(block.norm1.scale == 1)


def test_eager_and_sdpa_agree_with_padding():
    sdpa = make_model()
    eager = GPT2EduForCausalLM._from_config(tiny_config(), attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    input_ids = torch.randint(0, 100, (2, 10))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0
    real = attention_mask.bool()  # padding positions see no real token: their logits are meaningless, but finite
    for mask in (None, attention_mask):
        with torch.no_grad():
            eager_logits, sdpa_logits = (
                eager(input_ids, attention_mask=mask).logits,
                sdpa(input_ids, attention_mask=mask).logits,
            )
        assert torch.isfinite(eager_logits).all() and torch.isfinite(sdpa_logits).all()
        keep = real if mask is not None else torch.ones_like(real)
        torch.testing.assert_close(eager_logits[keep], sdpa_logits[keep])


def test_gradient_checkpointing_gives_the_same_gradients():
    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = make_model(drop_rate=0.1).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        assert model.model.trf_blocks[0].gradient_checkpointing == checkpointing
        torch.manual_seed(1)  # the same dropout masks in both runs; checkpointing replays the RNG state
        input_ids = torch.randint(0, 101, (2, 16))
        model(input_ids, labels=input_ids).loss.backward()
        return {name: param.grad for name, param in model.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


# --- generation ---------------------------------------------------------------------------------------------------


def test_greedy_generate_with_and_without_cache_matches_the_seeds_loop():
    model = make_model(dtype=torch.float64)
    prompt = torch.randint(0, 100, (2, 7))
    expected = greedy_reference(model, prompt, 12)
    cached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True)
    uncached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False)
    assert torch.equal(cached, expected)
    assert torch.equal(uncached, expected)


def test_cache_step_by_step_equals_full_forward():
    model = make_model()
    input_ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        full = model(input_ids).logits
        first = model(input_ids[:, :5], use_cache=True)
        rest = model(input_ids[:, 5:], cache=first.cache).logits  # several new tokens on top of a cache
    assert first.cache.get_seq_length() == 9
    torch.testing.assert_close(torch.cat([first.logits, rest], dim=1), full)


def test_left_padded_batch_generates_what_each_prompt_generates_alone():
    model = make_model(dtype=torch.float64)
    prompts = [torch.randint(0, 100, (n,)) for n in (3, 8, 5)]
    width = max(len(p) for p in prompts)
    pad = 100  # never among the prompt tokens, so generate() cannot mistake a real token for padding
    input_ids = torch.stack([F.pad(p, (width - len(p), 0), value=pad) for p in prompts])
    attention_mask = torch.stack([F.pad(torch.ones_like(p), (width - len(p), 0)) for p in prompts])
    batch = model.generate(
        input_ids, attention_mask=attention_mask, max_new_tokens=10, do_sample=False, pad_token_id=pad
    )
    for row, prompt in zip(batch, prompts, strict=True):
        alone = model.generate(prompt[None], max_new_tokens=10, do_sample=False, pad_token_id=pad)
        assert torch.equal(row[width:], alone[0, len(prompt) :])


def test_static_cache_generates_what_the_dynamic_cache_generates():
    model = make_model(dtype=torch.float64)
    prompt = torch.randint(0, 100, (2, 6))
    dynamic = model.generate(prompt, max_new_tokens=8, do_sample=False)
    static = model.generate(prompt, max_new_tokens=8, do_sample=False, cache_implementation="static")
    assert torch.equal(static, dynamic)
    # and the model's own forward with a StaticCache, no 4D mask given
    cache = StaticCache(config=model.config, max_cache_len=20)
    with torch.no_grad():
        first = model(prompt, cache=cache).logits
        second = model(dynamic[:, 6:7], cache=cache).logits
        full = model(dynamic[:, :7]).logits
    torch.testing.assert_close(torch.cat([first, second], dim=1), full)


def test_logits_to_keep_returns_only_the_last_positions():
    model = make_model()
    input_ids = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        full = model(input_ids).logits
        last = model(input_ids, logits_to_keep=1).logits
        picked = model(input_ids, logits_to_keep=torch.tensor([2, 5])).logits
    assert last.shape == (2, 1, 101)
    torch.testing.assert_close(last, full[:, -1:])
    torch.testing.assert_close(picked, full[:, [2, 5]])


def test_too_long_input_is_a_clear_error():
    model = make_model()
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_base_model_returns_hidden_states():
    torch.manual_seed(0)
    lm = make_model()
    body = GPT2EduModel(tiny_config())
    body.load_state_dict({k.removeprefix("model."): v for k, v in lm.state_dict().items() if k.startswith("model.")})
    input_ids = torch.randint(0, 100, (1, 5))
    with torch.no_grad():
        hidden = body(input_ids).last_hidden_state
        torch.testing.assert_close(lm.out_head(hidden), lm(input_ids).logits)

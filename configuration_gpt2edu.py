"""GPT2EduConfig: the seed's `GPTConfig`, as a Hugging Face config.

The field names and defaults are the seed's (GPT-2 124M). transformers' own code looks for standard names such as
`hidden_size` or `num_hidden_layers`; `attribute_map` makes those aliases of ours, so both spellings read and write
the same value.
"""

from transformers import PreTrainedConfig

# The positions a sequence classifier can read (see `classifier_pooling` below).
CLASSIFIER_POOLINGS = ("last_non_padding", "last_position")


class GPT2EduConfig(PreTrainedConfig):
    """Configuration of a gpt2edu model; the defaults are GPT-2 124M.

    Args:
        vocab_size: Number of tokens in the vocabulary (GPT-2's BPE has 50257).
        context_length: Longest sequence the model attends over (learned positions).
        emb_dim: Width of the embeddings and the residual stream.
        n_heads: Number of attention heads; must divide `emb_dim`.
        n_layers: Number of transformer blocks.
        drop_rate: Dropout on embeddings, attention weights and residual branches, in [0, 1).
        qkv_bias: Whether the query, key and value projections have a bias (OpenAI's GPT-2 has one).
        tie_word_embeddings: Share the output head with the token embedding (OpenAI's GPT-2 does; the seed does not).
        layer_norm_eps: Epsilon of every LayerNorm.
        initializer_range: Standard deviation of the normal initialisation.
        bos_token_id, eos_token_id: `<|endoftext|>` in GPT-2's vocabulary.
        classifier_bias: Whether the sequence classifier's `score` layer has a bias. GPT-2's has none; the book's
            chapter-6 head, `Linear(emb_dim, num_classes)`, has one.
        classifier_pooling: Which position's hidden state the sequence classifier reads. "last_non_padding" (GPT-2's):
            each row's rightmost token that is not `pad_token_id`, so right- and left-padded batches classify each
            text by its last real token. "last_position" (the book's chapter 6, `logits[:, -1, :]`): the last
            position, whatever token sits there.

    The task heads also read transformers' standard fields: `num_labels`, `id2label`, `label2id`, `problem_type`
    ("regression", "single_label_classification" or "multi_label_classification") and `pad_token_id`.
    """

    model_type = "gpt2edu"
    # HF: library code (DynamicCache, generate, Trainer) reads the standard names; map them onto the seed's.
    attribute_map = {
        "hidden_size": "emb_dim",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "max_position_embeddings": "context_length",
    }

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    tie_word_embeddings: bool = False
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    use_cache: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None
    classifier_bias: bool = False
    classifier_pooling: str = "last_non_padding"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if getattr(self, "auto_map", None) is None:
            # HF: tells the Auto classes which classes in the saved code files to load with trust_remote_code=True,
            # for users who have transformers but not this project; the task heads too, so that a language model's
            # folder loads into a classifier (the book's chapter 6) from the Hub as it is.
            self.auto_map = {
                "AutoConfig": "configuration_gpt2edu.GPT2EduConfig",
                "AutoModel": "modeling_gpt2edu.GPT2EduModel",
                "AutoModelForCausalLM": "modeling_gpt2edu.GPT2EduForCausalLM",
                "AutoModelForSequenceClassification": "modeling_gpt2edu.GPT2EduForSequenceClassification",
                "AutoModelForTokenClassification": "modeling_gpt2edu.GPT2EduForTokenClassification",
                "AutoModelForQuestionAnswering": "modeling_gpt2edu.GPT2EduForQuestionAnswering",
            }
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPT2EduConfig: {name} must be a positive integer, got {value!r}.")
        if self.emb_dim % self.n_heads != 0:
            raise ValueError(
                f"GPT2EduConfig: emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads}); "
                f"choose n_heads among the divisors of {self.emb_dim} or change emb_dim."
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"GPT2EduConfig: drop_rate must be in [0, 1), got {self.drop_rate!r}; 0.1 is GPT-2's.")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"GPT2EduConfig: layer_norm_eps must be positive, got {self.layer_norm_eps!r}.")
        if self.classifier_pooling not in CLASSIFIER_POOLINGS:
            raise ValueError(
                f"GPT2EduConfig: classifier_pooling must be one of {CLASSIFIER_POOLINGS}, got "
                f"{self.classifier_pooling!r}; 'last_non_padding' is GPT-2's, 'last_position' the book's chapter 6."
            )
        if not isinstance(self.classifier_bias, bool):
            raise ValueError(f"GPT2EduConfig: classifier_bias must be True or False, got {self.classifier_bias!r}.")


__all__ = ["GPT2EduConfig"]

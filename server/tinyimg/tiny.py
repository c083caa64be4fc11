"""Tiny diffusers pipelines with random weights, built offline.

They run through exactly the code path a real model does (``save_pretrained`` here, then
``from_pretrained`` in the server), so tests and the demo need no download. Weights are seeded:
building twice gives the same pipeline. The images they make are noise. The shared parts live here
(tokenizers that need no files, a tiny CLIP config, the tiny VAE); each family's own builder is
declared in its family file (``Family.build_tiny``).
"""

from __future__ import annotations

from typing import Any

TINY_SEED = 0
CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 64


def build_byte_vocab() -> tuple[dict[str, int], list[str]]:
    """A byte-level BPE vocabulary with no merges: every byte char, its word-final form, 2 specials.

    Enough for CLIP's tokenizer to encode any text (one token per byte), with no files."""
    from tokenizers import pre_tokenizers

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, []


def build_clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = build_byte_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_LENGTH)


def build_t5_tokenizer(model_max_length: int = T5_MAX_LENGTH) -> Any:
    """A Unigram tokenizer over printable ASCII, wrapped as T5TokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]  # a lazy alias mypy cannot see

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(c), -2.0) for c in range(33, 127)]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    return T5TokenizerFast(tokenizer_object=backend, extra_ids=0, model_max_length=model_max_length)


def build_clip_text_config(vocab_size: int, eos_id: int, pad_id: int, bos_id: int) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=32,
        max_position_embeddings=CLIP_MAX_LENGTH,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        hidden_act="gelu",
    )


def build_tiny_clip_config(tokenizer: Any) -> Any:
    return build_clip_text_config(
        len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id
    )


def build_tiny_vae(**family_options: Any) -> Any:
    """A 2-block AutoencoderKL with 4 latent channels; ``family_options`` are the family's own
    (Flux's VAE has no quant convs and its own shift and scale)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=64,
        **family_options,
    )

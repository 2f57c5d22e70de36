"""Tiny random Hugging Face models (hidden 64, 2 layers) and a tiny GLEE for the adapters tests."""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

VOCAB = 64
IMAGE_TOKEN = 60
IMAGE_TOKENS = 16
"""A 32x32 image in 8x8 patches: 16 image tokens (CLIP's CLS is dropped by strategy "default")."""


def llama_config() -> LlamaConfig:
    """q_proj 64 -> 64, v_proj 64 -> 32 (2 key/value heads of 16)."""
    return LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config()).eval()


def tiny_llava(seed: int = 0) -> LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       image_size=32, patch_size=8),
        text_config=llama_config(), image_token_id=IMAGE_TOKEN, vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration(config).eval()


def tiny_qwen2vl(seed: int = 0) -> Qwen2VLForConditionalGeneration:
    torch.manual_seed(seed)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=None, eos_token_id=None,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 2, 4]}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=IMAGE_TOKEN, video_token_id=61, vision_start_token_id=62)
    return Qwen2VLForConditionalGeneration(config).eval()


def llava_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """2 sequences of <s>, 16 image tokens and 8 text tokens (ids in [4, 58)); 2 random 32x32 images."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.full((2, 1), 2), torch.full((2, IMAGE_TOKENS), IMAGE_TOKEN),
                     torch.randint(4, 58, (2, 8), generator=generator)], dim=1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(2, 3, 32, 32, generator=generator)}


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer: "segment the dog" -> [4, 5, 6]; no special tokens added."""
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "<s>", "</s>", "segment", "the", "dog"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]")


def perturb_lora_b(model: torch.nn.Module, std: float = 0.1, seed: int = 0) -> int:
    """Set every lora_B weight (zero at init, so LoRA starts as the identity) to N(0, std); returns how many."""
    generator = torch.Generator().manual_seed(seed)
    weights = [p for n, p in model.named_parameters() if "lora_B" in n]
    with torch.no_grad():
        for weight in weights:
            weight.copy_(torch.randn(weight.shape, generator=generator) * std)
    return len(weights)


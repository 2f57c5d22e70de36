"""Tiny random-weight VLMs (LLaVA, Gemma3) and a locally built tokenizer: tests, and the shipped shapeworld mLLM.

Nothing here downloads: the tokenizer is trained on the given texts with the ``tokenizers`` library
(word level, punctuation split off), and the VLMs are transformers classes built from small configs.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Iterable

import torch

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3Processor,
    Gemma3TextConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

from glee_core.modeling.text_encoder import encode_categories
from mllm.prompting import IMAGE_TOKEN

if TYPE_CHECKING:
    from mllm.modeling import GleeLLM

BASE_SPECIALS = ["[UNK]", "[PAD]", "<s>", "</s>"]


def word_tokenizer(texts: Iterable[str], min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``texts`` (words and punctuation) with ``<s>``/``</s>``/``[PAD]``/``[UNK]``
    and ``<image>``; gleekit's own tokens are added later by :func:`mllm.tokens.add_special_tokens`."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=BASE_SPECIALS,
                                                                   min_frequency=min_frequency))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   bos_token="<s>", eos_token="</s>")
    fast.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return fast


def tiny_llava(tokenizer: PreTrainedTokenizerFast, *, image_size: int = 64, patch_size: int = 8,
               vision_hidden: int = 64, vision_layers: int = 2, hidden: int = 128, layers: int = 4, heads: int = 4,
               ) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A random-weight LLaVA (CLIP ViT + Llama) and its processor; (image_size / patch_size)² image tokens."""
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                       num_hidden_layers=vision_layers, num_attention_heads=4,
                                       image_size=image_size, patch_size=patch_size),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                                max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), vision_feature_select_strategy="default",
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                              crop_size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer, patch_size=patch_size, num_additional_image_tokens=1,
        vision_feature_select_strategy="default", image_token=IMAGE_TOKEN)
    return LlavaForConditionalGeneration(config), processor


GEMMA3_BOI, GEMMA3_EOI, GEMMA3_IMAGE = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
# What GleeLLMConfig.image_placeholder must be for Gemma3: its processor expands the begin-of-image token into
# "\n\n<start_of_image><image_soft_token>×N<end_of_image>\n\n".
GEMMA3_IMAGE_PLACEHOLDER = GEMMA3_BOI


def tiny_gemma3(tokenizer: PreTrainedTokenizerFast, *, image_size: int = 32, patch_size: int = 8,
                image_tokens: int = 4, vision_hidden: int = 32, vision_layers: int = 2, hidden: int = 32,
                layers: int = 2, heads: int = 2, sliding_window: int = 16,
                ) -> tuple[Gemma3ForConditionalGeneration, Gemma3Processor]:
    """A random-weight Gemma3 (SigLIP ViT, average-pooled soft image tokens, Gemma3 text model) and its processor.

    The processor's tokenizer is a copy of ``tokenizer`` that also knows Gemma3's ``<start_of_image>`` /
    ``<end_of_image>`` / ``<image_soft_token>`` (as the ``boi_token`` / ``eoi_token`` / ``image_token`` attributes
    Gemma3Processor reads); ``tokenizer`` itself is left unchanged. Prompts write :data:`GEMMA3_IMAGE_PLACEHOLDER`
    (``GleeLLMConfig(image_placeholder=GEMMA3_IMAGE_PLACEHOLDER)``), which the processor expands into
    ``image_tokens`` soft tokens ((image_size / patch_size)² patches average-pooled to a square of
    ``image_tokens``, which must be a square number dividing it). The text model alternates a sliding-window
    layer (window ``sliding_window``) with a global one, and the image tokens attend to each other both ways
    (Gemma3's ``token_type_ids``).
    """
    specials = {"boi_token": GEMMA3_BOI, "eoi_token": GEMMA3_EOI, "image_token": GEMMA3_IMAGE}
    named = {name: getattr(tokenizer, name) for name in ("unk_token", "pad_token", "bos_token", "eos_token")}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=copy.deepcopy(tokenizer.backend_tokenizer), **named,
                                        **specials)
    tokenizer.add_tokens(list(specials.values()), special_tokens=True)
    head_dim = hidden // heads
    config = Gemma3Config(
        vision_config=SiglipVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                         num_hidden_layers=vision_layers, num_attention_heads=heads,
                                         image_size=image_size, patch_size=patch_size),
        text_config=Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                                     num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=1,
                                     head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=sliding_window,
                                     layer_types=["sliding_attention" if i % 2 == 0 else "full_attention"
                                                  for i in range(layers)],
                                     max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        mm_tokens_per_image=image_tokens, boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id, image_token_index=tokenizer.image_token_id,
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=image_tokens)
    return Gemma3ForConditionalGeneration(config), processor


@torch.no_grad()
def init_word_embeddings(model: "GleeLLM") -> None:
    """Start each word's LLM embedding from GLEE's own text tower: the word's class embedding (what GLEE grounds
    the word as), through a fixed random orthogonal map to the LLM width, at the embeddings' scale. A random-init
    LLM then begins with words GLEE can ground, instead of learning their meaning from scratch."""
    tokenizer, embedding = model.processor.tokenizer, model.vlm.get_input_embeddings().weight
    words = [(token, index) for token, index in tokenizer.get_vocab().items()
             if token.isalpha() and index not in tokenizer.all_special_ids]
    glee = model.glee
    ids, mask = glee._tokenize([word for word, _ in words])
    classes = encode_categories(glee.text_encoder, glee.lang_projection, ids, mask).class_embeddings
    classes = (classes - classes.mean(0)) / classes.std(0).clamp(min=1e-6)
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(embedding.shape[1], classes.shape[1], generator=generator))[0]
    rows = torch.tensor([index for _, index in words])
    embedding[rows] = (classes @ basis.T * embedding.std()).to(embedding.dtype)

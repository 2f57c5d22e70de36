"""``GleeModel``: backbone, text tower, pixel decoder with early fusion, and object decoder.

The module tree equals the official ``GLEE_Model`` (``glee.*`` in official checkpoints), so official
weights load by stripping that prefix (:mod:`glee_core.checkpoint`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPTextModel

from glee_core.checkpoint import (
    CheckpointError,
    LoadReport,
    from_official_names,
    load_weights,
    read_state_dict,
    state_for_saving,
)
from glee_core.config import PRESETS, GleeConfig, get_preset
from glee_core.modeling.backbones import build_backbone
from glee_core.modeling.decoder import DecoderOutput, DenoisingQueries, MaskDINODecoder, PromptMode
from glee_core.modeling.decoder_layer import PromptTokens
from glee_core.modeling.pixel_decoder import MaskDINOEncoder
from glee_core.modeling.referring_head import (ReferringHead, choice_logits_to_query_logits, referring_head_inputs,
                                               region_colours)
from glee_core.modeling.text_encoder import (
    clip_text_config,
    encode_caption,
    encode_categories,
    encode_expressions,
    expression_encoding,
    text_hidden_states,
)
from glee_core.modeling.tokenizer import tokenize
from glee_core.modeling.visual_prompt import (
    PROMPT_MODES,
    FeatureFuser,
    spatial_prompt_tokens,
    template_crops,
    template_tokens,
)
from glee_core.phrases import token_spans
from glee_core.vocabulary import TextFingerprint, Vocabulary, VocabularyCache

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BUNDLED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
"""Model folders shipped inside the package, by preset name (``nano``: the embedded default)."""


def bundled_model_dir(name: str) -> Path | None:
    """The shipped model folder of a preset name, or None when no weights are bundled for it."""
    key = name.lower().replace("_", "-")
    if key not in PRESETS:
        return None
    directory = BUNDLED_WEIGHTS / key
    return directory if (directory / WEIGHTS_NAME).is_file() else None


@dataclass
class GleeOutput:
    """What :meth:`GleeModel.forward` returns, for B images and Q queries.

    Attributes:
        pred_logits: [B, Q, K] class logits (K categories; 1 for a referring expression).
        pred_boxes: [B, Q, 4] boxes, cxcywh in [0, 1] of the padded input.
        pred_masks: [B, Q, Hp/4, Wp/4] mask logits at stride 4 of the padded input.
        pred_scores: [B, Q, 1] confidence (objectness) logits.
        query_embeds: [B, Q, 256] final normed decoder states: track embeddings, and the object
            tokens the LLM side consumes.
        decoder: the full decoder output (per-layer predictions, proposals) for losses and analysis.
        mask_features: [B, mask_dim, Hp/4, Wp/4] the per-pixel features masks are read from (region pooling).
        referring_choices: [B, Q + 1] the referring head's choice logits ("none" first) when the model has one,
            is in eval mode and the expressions came as text; ``pred_logits`` then holds the head's per-query
            logits and ``decoder.pred_logits`` GLEE's own (:mod:`glee_core.modeling.referring_head`).
    """

    pred_logits: torch.Tensor
    pred_boxes: torch.Tensor
    pred_masks: torch.Tensor
    pred_scores: torch.Tensor
    query_embeds: torch.Tensor
    decoder: DecoderOutput
    mask_features: torch.Tensor | None = None
    referring_choices: torch.Tensor | None = None


class GleeModel(nn.Module):
    """GLEE: detect, segment and ground objects from categories, expressions or visual prompts.

    Build from a :class:`GleeConfig` (random weights) or with :meth:`from_pretrained`.
    """

    def __init__(self, config: GleeConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_dim
        self.backbone = build_backbone(config.backbone, **config.backbone_kwargs)
        features = list(self.backbone.out_features)
        channels = {name: self.backbone.out_channels[name] for name in features}
        strides = {name: self.backbone.out_strides[name] for name in features}
        if config.visual_prompt:
            self.sot_fuser = FeatureFuser(in_channels=[channels[n] for n in features[-3:]], channels=hidden)
        text = config.text
        text_config = clip_text_config(text.hidden_size, text.intermediate_size, text.num_layers, text.num_heads)
        self.text_encoder = CLIPTextModel(text_config)
        if text.distill_teacher:
            self.text_encoder_teacher = CLIPTextModel(text_config)
            self.text_encoder_teacher.requires_grad_(False)
        self.lang_projection = nn.Parameter(torch.randn(text.hidden_size, hidden) / text.hidden_size**0.5)
        self.pixel_decoder = MaskDINOEncoder(in_channels=channels, in_strides=strides, lang_dim=hidden,
                                             **config.pixel_decoder)
        self.predictor = MaskDINODecoder(hidden_dim=hidden, **config.decoder)
        self.mask_sptial_embed = nn.ParameterList(
            [nn.Parameter(torch.randn(hidden, hidden) * 0.02) for _ in range(4)])
        self.pn_indicator = nn.Embedding(2, hidden)
        self.referring_head = (None if config.referring_head is None
                               else ReferringHead(hidden, hidden, config.referring_head))
        self.load_report: LoadReport | None = None
        self.vocabularies = VocabularyCache()
        self._fingerprint = TextFingerprint()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: GleeConfig | str) -> "GleeModel":
        """A randomly initialised model of a config or preset name."""
        return cls(get_preset(config) if isinstance(config, str) else config)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        *,
        preset: str | None = None,
        strict: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> "GleeModel":
        """Load a model.

        ``source`` is a folder written by :meth:`save_pretrained` (config.json + model.safetensors),
        a preset name with bundled weights (``"nano"``, the embedded default), or an official checkpoint file
        (``.pth`` / ``.safetensors`` with ``glee.*`` names) together with ``preset`` naming its architecture. With ``strict`` (default) every weight must be present
        and every checkpoint entry used; otherwise ``model.load_report`` records what was not.
        """
        path = Path(source)
        bundled = bundled_model_dir(str(source)) if not path.exists() else None
        if bundled is not None:
            path = bundled
        if path.is_dir():
            config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
            if not config_file.is_file() or not weights_file.is_file():
                raise CheckpointError(f"{path} is not a gleekit model folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")
            config = GleeConfig.from_dict(json.loads(config_file.read_text()))
            if preset is not None and get_preset(preset).preset != config.preset:
                raise CheckpointError(f"{path} holds a {config.preset or 'custom'} model, not {preset!r}; "
                                      "leave preset out for model folders")
            state = read_state_dict(weights_file)
            dropped: list[str] = []
        elif path.is_file():
            if preset is None:
                raise CheckpointError(
                    f"{path} is a checkpoint file; pass preset= (one of {', '.join(sorted(PRESETS))}) to say its architecture")
            config = get_preset(preset)
            state, dropped = from_official_names(read_state_dict(path))
        elif str(source).lower().replace("_", "-") in PRESETS:
            raise CheckpointError(
                f"no weights are bundled for preset {source!r}. Download the official GLEE checkpoint and pass its path "
                f"with preset={source!r}, or use GleeModel.from_config({str(source)!r}) for random weights")
        else:
            raise CheckpointError(f"{source!r} is neither a model folder, a checkpoint file nor a preset name")
        model = cls(config)
        model.load_report = load_weights(model, state, strict=strict)
        model.load_report.ignored.extend(dropped)
        model.eval()
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return model

    def save_pretrained(self, directory: str | Path, *, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed).

        ``dtype`` (e.g. ``torch.float16``) stores floating-point tensors in that type to halve the file;
        :meth:`from_pretrained` casts them back to the model's dtype.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2))
        state = state_for_saving(self)
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "gleekit"})
        return directory

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.lang_projection.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lang_projection.dtype

    def _tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = tokenize(list(texts), max_length=self.config.text.max_length)
        return ids.to(self.device), mask.to(self.device)

    def text_fingerprint(self) -> str:
        """sha256 of the tokenizer and the text tower's weights (``text_encoder`` + ``lang_projection``);
        recomputed only after those tensors change."""
        return self._fingerprint(self.text_encoder, self.lang_projection, self.config.text.max_length)

    def encode_vocabulary(self, names: Sequence[str]) -> Vocabulary:
        """Encode K category names once -> :class:`Vocabulary` (class embeddings [K, C], fusion tokens [T, C]).

        Differentiable when gradients are enabled; pass the result as ``categories`` to :meth:`forward`
        (or to ``GleePredictor.predict``), or save it with ``Vocabulary.save``.
        """
        return self._encode_names(names, self.text_fingerprint())

    def encode_caption(self, text: str, spans: Sequence[tuple[int, int]]) -> Vocabulary:
        """GLIP-style phrases in context: the caption is encoded once; phrase ``(start, end)`` (character
        offsets, on word boundaries) gets the mean of its tokens as class embedding; early fusion sees the
        whole caption. Names of the result are the phrase texts."""
        ids, mask = self._tokenize([text])
        positions = token_spans(text, spans, self.config.text.max_length)
        enc = encode_caption(self.text_encoder, self.lang_projection, ids, mask, positions)
        names = tuple(text[start:end] for start, end in spans)
        return Vocabulary(names, enc.class_embeddings, enc.fusion_tokens[0], self.text_fingerprint())

    def _encode_names(self, names: Sequence[str], fingerprint: str) -> Vocabulary:
        if isinstance(names, str):
            raise ValueError(f"names must be a list of strings, got the single string {names!r}")
        ids, mask = self._tokenize(names)
        enc = encode_categories(self.text_encoder, self.lang_projection, ids, mask)
        return Vocabulary(tuple(names), enc.class_embeddings, enc.fusion_tokens[0], fingerprint)

    def vocabulary(self, categories: Sequence[str] | Vocabulary) -> Vocabulary:
        """The encoded vocabulary of ``categories``: checked when given encoded; else, while gradients are
        disabled, from the LRU cache ``self.vocabularies`` (encoded and stored on a miss); else encoded."""
        if isinstance(categories, Vocabulary):
            categories.check_fingerprint(self.text_fingerprint())
            if categories.class_embeddings.shape[1] != self.config.hidden_dim:
                raise ValueError(f"vocabulary embeddings have width {categories.class_embeddings.shape[1]}, "
                                 f"the model {self.config.hidden_dim}")
            return categories.to(self.device, self.dtype)
        if torch.is_grad_enabled():  # training: the text tower may change every step
            return self._encode_names(categories, fingerprint="")
        fingerprint = self.text_fingerprint()
        found = self.vocabularies.get(fingerprint, categories)
        if found is None or (found.class_embeddings.device, found.class_embeddings.dtype) != (self.device, self.dtype):
            # a miss, or an entry made before the model moved: store it where the model now is, converted once
            found = self._encode_names(categories, fingerprint) if found is None else found
            found = found.to(self.device, self.dtype)
            self.vocabularies.put(found)
        return found

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        images: torch.Tensor,
        *,
        categories: Sequence[str] | Vocabulary | None = None,
        expressions: Sequence[str] | None = None,
        expression_embeds: torch.Tensor | None = None,
        expression_mask: torch.Tensor | None = None,
        visual_prompt_masks: torch.Tensor | None = None,
        visual_prompt_type: str = "box",
        denoising: DenoisingQueries | None = None,
        record: dict[str, torch.Tensor] | None = None,
        image_features: dict[str, torch.Tensor] | None = None,
    ) -> GleeOutput:
        """Run GLEE on a normalised, padded batch.

        Args:
            images: [B, 3, Hp, Wp] normalised images (see :mod:`glee_core.processing`).
            categories: K names, or a :class:`Vocabulary` encoded from them; one logit per name (required
                with visual prompts too, where the official demo uses ``["object"]``, the default). Without
                gradients, encoded name lists are kept in ``self.vocabularies`` (LRU).
            expressions: B referring expressions, one per image (already normalised).
            expression_embeds: [B, L, hidden_dim] referring prompts given as embeddings instead of text (e.g. an
                LLM's ``[SEG]`` states through a projector); they take the place of the CLIP path's projected
                tokens: early fusion, decoder prompt tokens, and their mean as the class embedding.
            expression_mask: [B, L] bool, True = a real token (default: all True); only with ``expression_embeds``.
            visual_prompt_masks: [B, Hp, Wp] bool prompt masks, one per image.
            visual_prompt_type: ``box``, ``point``, ``scribble`` or ``mask``.
            denoising: training-only denoising queries (``self.predictor.prepare_for_dn``).
            record: if a dict is given, intermediate tensors are stored in it under the names of the
                official-code fixtures (``text.*``, ``fusion.*``, ``encoder.*``, ``decoder.*``, ``vp.*``, ``out.*``).
            image_features: backbone outputs of ``images`` from :meth:`encode_image`, to reuse them across
                several prompts of the same images (the backbone does not see the prompt).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be normalised floats, got dtype {images.dtype}")
        for name, texts in (("categories", categories), ("expressions", expressions)):
            if isinstance(texts, str):
                raise ValueError(f"{name} must be a list of strings, got the single string {texts!r}")
        batch = images.shape[0]
        images = images.to(device=self.device, dtype=self.dtype)
        if expression_embeds is not None and expressions is not None:
            raise ValueError("give expressions as text or as expression_embeds, not both")
        if expression_mask is not None and expression_embeds is None:
            raise ValueError("expression_mask is only used together with expression_embeds")
        referring = expressions is not None or expression_embeds is not None
        if referring and (categories is not None or visual_prompt_masks is not None):
            raise ValueError("give either expressions or categories (optionally with visual prompts), not both")
        if visual_prompt_masks is not None:
            mode = PromptMode.VISUAL
            categories = ["object"] if categories is None else categories
        elif referring:
            mode = PromptMode.REFERRING
        elif categories is not None:
            mode = PromptMode.CATEGORY
        else:
            raise ValueError("give categories, expressions or visual_prompt_masks")

        decoder_kwargs: dict = {"mode": mode, "denoising": denoising, "with_interm_masks": record is not None}
        if mode is PromptMode.REFERRING:
            if expression_embeds is not None:
                enc = expression_encoding(*self._checked_embeds(expression_embeds, expression_mask, batch))
                ids = mask = None
            else:
                if len(expressions) != batch:
                    raise ValueError(f"{len(expressions)} expressions for {batch} images; give one per image")
                ids, mask = self._tokenize(expressions)
                enc = encode_expressions(self.text_encoder, self.lang_projection, ids, mask)
            decoder_kwargs.update(grounding_class=enc.grounding_class,
                                  text_prompt=PromptTokens(enc.fusion_tokens, enc.grounding_pad_mask))
            lang = {"hidden": enc.fusion_tokens, "masks": enc.fusion_mask}
            self._record_text(record, ids, mask, grounding_class=enc.grounding_class,
                              grounding_tokens=enc.grounding_tokens, grounding_nonzero_mask=enc.grounding_pad_mask)
        else:
            if len(categories) == 0:
                raise ValueError("categories is empty; give at least one name")
            vocab = self.vocabulary(categories)
            decoder_kwargs["class_embeddings"] = vocab.class_embeddings
            tokens = vocab.fusion_tokens.expand(batch, -1, -1)
            lang = {"hidden": tokens, "masks": torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)}
            if record is not None:
                self._record_text(record, *self._tokenize(vocab.names), class_embeddings=vocab.class_embeddings)

        features = self.encode_image(images) if image_features is None else image_features
        if mode is PromptMode.VISUAL:
            lang = self._add_template_tokens(images, visual_prompt_masks, visual_prompt_type, lang, record)
        if record is not None:
            record["fusion.lang_in"], record["fusion.lang_in_mask"] = lang["hidden"], lang["masks"]
        pixels = self.pixel_decoder(features, lang=lang if self.config.early_fusion else None,
                                    return_intermediates=record is not None)
        if mode is PromptMode.VISUAL:
            levels = spatial_prompt_tokens(pixels.multi_scale_features, visual_prompt_masks.to(images.device),
                                           list(self.mask_sptial_embed), self.pn_indicator.weight)
            decoder_kwargs["visual_prompts"] = [PromptTokens(t.transpose(0, 1), m) for t, m in levels]
            if record is not None:
                for level, (tokens, pad) in enumerate(levels):
                    record[f"vp.prompt_tokens.{level}"], record[f"vp.prompt_tokens_pad_mask.{level}"] = tokens, pad
        self._check_enough_positions(images, pixels.multi_scale_features)
        out = self.predictor(pixels.multi_scale_features, pixels.mask_features, **decoder_kwargs)
        if record is not None:
            self._record_pixels_and_decoder(record, features, pixels, out)
        logits, choices = out.pred_logits, None
        if mode is PromptMode.REFERRING and self.referring_head is not None and ids is not None and not self.training:
            queries = referring_head_inputs(out.pred_track_embed, out.pred_boxes, out.pred_logits, out.pred_scores,
                                            region_colours(images, out.pred_masks))
            choices = self.referring_head(queries, enc.fusion_tokens, enc.fusion_mask)
            logits = choice_logits_to_query_logits(choices).to(out.pred_logits.dtype)
        return GleeOutput(logits, out.pred_boxes, out.pred_masks, out.pred_scores, out.pred_track_embed, out,
                          pixels.mask_features, choices)

    def encode_image(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backbone features of normalised images [B, 3, Hp, Wp], by level name (``res2``..``res5``)."""
        return self.backbone(images.to(device=self.device, dtype=self.dtype))

    def _checked_embeds(self, embeds: torch.Tensor, mask: torch.Tensor | None,
                        batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``expression_embeds`` [B, L, hidden_dim] on the model's device/dtype and its bool mask (default all True)."""
        hidden = self.config.hidden_dim
        if embeds.dim() != 3 or embeds.shape[0] != batch or embeds.shape[2] != hidden:
            raise ValueError(f"expression_embeds must be [B={batch}, L, {hidden}], got {tuple(embeds.shape)}")
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.bool)
        elif mask.shape != embeds.shape[:2]:
            raise ValueError(f"expression_mask must be [B, L] = {list(embeds.shape[:2])}, got {list(mask.shape)}")
        return embeds.to(device=self.device, dtype=self.dtype), mask.to(device=self.device, dtype=torch.bool)

    def _check_enough_positions(self, images: torch.Tensor, multi_scale_features: Sequence[torch.Tensor]) -> None:
        """The decoder's queries are the top-``num_queries`` encoder positions; a tiny input has too few."""
        positions = sum(int(f.shape[-2]) * int(f.shape[-1]) for f in multi_scale_features)
        if positions < self.predictor.num_queries:
            raise ValueError(
                f"images of {images.shape[-2]}x{images.shape[-1]} (HxW) are too small: their feature maps have "
                f"{positions} positions, fewer than the {self.predictor.num_queries} queries; use larger images")

    def _add_template_tokens(self, images, prompt_masks, prompt_type, lang, record):
        """Visual prompts: the template branch's 1024 tokens join the early-fusion language input."""
        if not self.config.visual_prompt:
            raise ValueError("this model was built without visual-prompt support (config.visual_prompt=False)")
        if prompt_type not in PROMPT_MODES:
            raise ValueError(f"visual_prompt_type must be one of {PROMPT_MODES}, got {prompt_type!r}")
        if prompt_masks.dim() != 3 or prompt_masks.shape[0] != images.shape[0] or prompt_masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"visual_prompt_masks must be [B, Hp, Wp] = {[images.shape[0], *images.shape[-2:]]}, "
                             f"got {list(prompt_masks.shape)}")
        prompt_masks = prompt_masks.to(device=images.device, dtype=torch.bool)
        if not bool(prompt_masks.flatten(1).any(1).all()):
            raise ValueError("a visual prompt mask is empty")
        crops = template_crops(images, prompt_masks, prompt_type)
        ref_feats, ref_masks = template_tokens(self.backbone, self.sot_fuser, crops)
        if record is not None:
            record["vp.prompt_mask"], record["vp.template_crop"], record["vp.ref_feats"] = prompt_masks, crops, ref_feats
        return {"hidden": torch.cat([lang["hidden"], ref_feats.to(lang["hidden"].dtype)], dim=1),
                "masks": torch.cat([lang["masks"], ref_masks], dim=1)}

    def _record_text(self, record, ids, mask, **named: torch.Tensor) -> None:
        if record is None:
            return
        if ids is not None:
            record["text.input_ids"], record["text.attention_mask"] = ids, mask
            with torch.no_grad():
                record["text.last_hidden_state"] = text_hidden_states(self.text_encoder, ids, mask)
        for name, value in named.items():
            record[f"text.{name}"] = value

    @staticmethod
    def _record_pixels_and_decoder(record, features, pixels, out: DecoderOutput) -> None:
        for name, value in features.items():
            record[f"backbone.{name}"] = value
        record.update(pixels.intermediates or {})
        record["encoder.memory"] = pixels.memory
        record["encoder.spatial_shapes"] = pixels.spatial_shapes
        record["pixel_decoder.mask_features"] = pixels.mask_features
        for level, value in enumerate(pixels.multi_scale_features):
            record[f"pixel_decoder.multi_scale.{level}"] = value
        record.update({
            "decoder.proposal_scores": out.proposal_scores, "decoder.proposal_index": out.proposal_index,
            "decoder.interm.logits": out.interm_logits, "decoder.interm.boxes": out.interm_boxes,
            "decoder.interm.scores": out.interm_scores, "decoder.interm.masks": out.interm_masks,
            "decoder.references": out.references, "decoder.logits": out.layer_logits,
            "decoder.boxes": out.layer_boxes, "decoder.scores": out.layer_scores, "decoder.hs": out.hs,
            "out.pred_logits": out.pred_logits, "out.pred_boxes": out.pred_boxes, "out.pred_masks": out.pred_masks,
            "out.pred_scores": out.pred_scores, "out.pred_track_embed": out.pred_track_embed,
        })

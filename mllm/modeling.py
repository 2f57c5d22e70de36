"""``GleeLLM``: a Hugging Face VLM + a ``GleeModel`` + two projectors (LISA with GLEE in place of SAM).

* Image -> the VLM's own vision tower (through its processor) and GLEE (through ``glee_core.processing``).
* GLEE's top-K queries -> :class:`adapters.ObjectProjector` -> the ``<object>`` slots of the prompt, each after
  its index token ``<objK>`` (All-Seeing-style object tokens). The slots are filled by a forward hook on the
  VLM's input embedding, so every family's own ``forward``/``generate`` (image-token merging, rotary
  position rules) runs unchanged.
* Each ``[SEG]``'s final hidden state (at the ``[SEG]`` position itself, Sa2VA's choice; LISA's one-token
  shift is a known trap) -> :class:`adapters.SegProjector` -> L GLEE prompt tokens in the referring slot
  -> GLEE's Q candidates; the top-scoring candidate is the mask, its sigmoid score the confidence.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from adapters.freeze import GleePolicy, freeze
from adapters.lora import glee_lora_config, has_lora, inject_lora
from adapters.projectors import ObjectProjector, PointerHead, SegProjector
from glee_core import processing
from glee_core.image_io import ImageSource, load_image
from glee_core.mask_ops import masks_to_boxes
from glee_core.modeling.glee import GleeModel
from glee_core.structures import Detections
from mllm.batching import GleeLLMBatch, collate
from mllm.config import GleeLLMConfig, check_mask_source
from mllm.generation import MllmAnswer, cited_indices, segment_spans
from mllm.losses import mask_bce, mask_dice, match_candidates, pointer_loss, token_ce
from mllm.objects import ObjectTokens, propose_objects
from mllm.prompting import EncodedConversation, encode_conversation, token_type_inputs
from mllm.tokens import SEG_TOKEN, SpecialTokenIds, add_special_tokens


@dataclass
class SegCandidates:
    """GLEE's answer to N ``[SEG]`` prompts: selection ``logits`` [N, Q], ``masks`` [N, Q, Hp/4, Wp/4] logits,
    ``boxes`` [N, Q, 4] cxcywh in [0, 1] of the padded input, ``image_index`` [N]."""

    logits: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    image_index: torch.Tensor

    def best(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)


@dataclass
class GleeLLMOutput:
    """What :meth:`GleeLLM.forward` returns for B conversations with N ``[SEG]`` tokens in all.

    Attributes:
        loss: weighted sum of the terms below (None without labels).
        ce_loss, mask_bce_loss, mask_dice_loss, select_loss, box_loss: the terms (scalars; mask terms are
            per-mask means, 0 when the batch has no ``[SEG]``).
        logits: [B, T, V] token logits.
        seg_masks: [M, Hp/4, Wp/4] mask logits of the chosen candidate of each ``[SEG]`` sent to GLEE (M = N,
            except in training with ``config.train_mask_prompts``).
        seg_scores: [M] GLEE's confidence (sigmoid of the chosen candidate's logit).
        seg_boxes: [M, 4] cxcywh in [0, 1] of the padded GLEE input.
        seg_index: [M] which ``[SEG]`` (0..N-1, reading order) each row is.
        seg_image_index: [M] the conversation (row) each one belongs to.
        pointer_logits: [N, K] how strongly each ``[SEG]`` points at each object token (None without objects).
        objects: the object tokens used.
    """

    loss: torch.Tensor | None
    ce_loss: torch.Tensor | None
    mask_bce_loss: torch.Tensor | None
    mask_dice_loss: torch.Tensor | None
    select_loss: torch.Tensor | None
    box_loss: torch.Tensor | None
    pointer_loss: torch.Tensor | None
    logits: torch.Tensor
    seg_masks: torch.Tensor
    seg_scores: torch.Tensor
    seg_boxes: torch.Tensor
    seg_index: torch.Tensor
    seg_image_index: torch.Tensor
    pointer_logits: torch.Tensor | None
    objects: ObjectTokens | None


class GleeLLM(nn.Module):
    """A VLM that answers with text, masks (one per ``[SEG]``, with GLEE's confidence) and cited objects.

    Build with :meth:`build` from a VLM, its processor and a ``GleeModel``; save and load whole with
    :func:`mllm.io.save_gleellm` / :func:`mllm.io.load_gleellm` (``save_pretrained`` / ``from_pretrained``).
    """

    def __init__(self, vlm: nn.Module, processor: Any, glee: GleeModel, config: GleeLLMConfig,
                 token_ids: SpecialTokenIds):
        super().__init__()
        self.vlm, self.processor, self.glee, self.config, self.token_ids = vlm, processor, glee, config, token_ids
        hidden = self.llm_hidden_size(vlm)
        self.seg_projector = SegProjector(hidden, glee.config.hidden_dim, config.seg_prompt_tokens)
        self.object_projector = (ObjectProjector(glee.config.hidden_dim, hidden, region_parts(glee, config),
                                                 raw_parts=(1,), output_rms=word_rms(vlm))  # 1: mean RGB
                                 if config.num_objects else None)
        self.pointer = PointerHead(hidden) if config.num_objects else None
        policy = GleePolicy(config.glee_policy)
        if policy is GleePolicy.FROZEN:
            freeze(glee).eval()
        elif policy is GleePolicy.LORA and not has_lora(glee):
            inject_lora(freeze(glee), glee_lora_config())

    @classmethod
    def build(cls, vlm: nn.Module, processor: Any, glee: GleeModel, config: GleeLLMConfig | None = None) -> "GleeLLM":
        """Add the special tokens to ``processor.tokenizer`` (checked single), resize the VLM's embeddings."""
        config = config or GleeLLMConfig()
        token_ids = add_special_tokens(processor.tokenizer, config.num_objects)
        if vlm.get_input_embeddings().num_embeddings < len(processor.tokenizer):
            vlm.resize_token_embeddings(len(processor.tokenizer))
        text = vlm.config.get_text_config()
        config.vlm_fingerprint = {"model_type": vlm.config.model_type, "hidden_size": text.hidden_size,
                                  "num_hidden_layers": text.num_hidden_layers}
        return cls(vlm, processor, glee, config, token_ids)

    @staticmethod
    def llm_hidden_size(vlm: nn.Module) -> int:
        return int(vlm.config.get_text_config().hidden_size)

    @property
    def device(self) -> torch.device:
        return self.seg_projector.mlp[0].weight.device

    @property
    def frozen_glee(self) -> bool:
        return GleePolicy(self.config.glee_policy) is GleePolicy.FROZEN

    def train(self, mode: bool = True) -> "GleeLLM":
        super().train(mode)
        if self.frozen_glee:
            self.glee.eval()
        return self

    # ------------------------------------------------------------------ GLEE side
    def glee_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_glee):
            return self.glee.encode_image(images)

    def propose(self, glee_batch: processing.ImageBatch, features: dict[str, torch.Tensor] | None = None) -> ObjectTokens:
        """The object tokens' content for a GLEE image batch (no gradient into a frozen GLEE)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_glee):
            return propose_objects(self.glee, glee_batch.tensor.to(self.device), glee_batch.image_sizes,
                                   list(self.config.object_categories), self.config.num_objects, features,
                                   self.config.silhouette_size, self.config.object_class_scores)

    def segment(self, images: torch.Tensor, features: dict[str, torch.Tensor], image_index: torch.Tensor,
                seg_hidden: torch.Tensor, pointed: torch.Tensor | None = None) -> SegCandidates:
        """N ``[SEG]`` states [N, H_llm] of images ``image_index`` [N] -> GLEE's candidates for each.

        The GLEE prompt is the L projected tokens, plus, with object tokens, the object queries averaged with
        the ``[SEG]``'s pointer probabilities (``pointed`` [N, C]): the query GLEE itself made for the object
        the ``[SEG]`` points at.
        """
        prompts = self.seg_projector(seg_hidden.to(self.seg_projector.mlp[0].weight.dtype))
        if pointed is not None:
            prompts = torch.cat([prompts, pointed[:, None].to(prompts.dtype)], dim=1)
        if not len(prompts):
            hp, wp = images.shape[-2:]
            q = self.glee.predictor.num_queries
            empty = prompts.new_zeros
            return SegCandidates(empty(0, q), empty(0, q, hp // 4, wp // 4), empty(0, q, 4), image_index)
        picked = {name: value[image_index] for name, value in features.items()}
        out = self.glee(images[image_index], expression_embeds=prompts, image_features=picked)
        return SegCandidates(out.pred_logits[..., 0], out.pred_masks, out.pred_boxes, image_index)

    # ------------------------------------------------------------------ LLM side
    @contextmanager
    def object_slots(self, contents: torch.Tensor | None) -> Iterator[None]:
        """While active, the VLM's input embedding writes ``contents`` [B, K, H] into the ``<object>`` slots and,
        with ``config.object_mentions``, adds content k to every ``<objk>`` token."""
        if contents is None:
            yield
            return
        slot_id, k = self.token_ids.object_slot, contents.shape[1]
        refs = self.token_ids.object_refs[:k] if self.config.object_mentions else ()

        def fill(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            ids = args[0]
            slots = ids == slot_id
            mentions = torch.full_like(ids, -1)
            for index, token in enumerate(refs):
                mentions[ids == token] = index
            if not bool(slots.any()) and not bool((mentions >= 0).any()):
                return output
            if ids.shape[0] != contents.shape[0]:
                raise ValueError(f"{ids.shape[0]} sequences for the object tokens of {contents.shape[0]} images")
            output = output.clone()
            if bool(slots.any()):
                counts = slots.sum(1)
                if bool((counts != k).any()):
                    raise ValueError(f"every sequence needs exactly {k} {'<object>'} slots for its {k} objects, got "
                                     f"{counts.tolist()}")
                output[slots] = contents.reshape(-1, contents.shape[-1]).to(output.dtype)
            rows, cols = (mentions >= 0).nonzero(as_tuple=True)
            output[rows, cols] = output[rows, cols] + contents[rows, mentions[rows, cols]].to(output.dtype)
            return output

        handle = self.vlm.get_input_embeddings().register_forward_hook(fill)
        try:
            yield
        finally:
            handle.remove()

    def _object_contents(self, objects: ObjectTokens | None) -> torch.Tensor | None:
        if self.object_projector is None or objects is None:
            return None
        return self.object_projector(objects.queries.to(self.device), objects.boxes.to(self.device),
                                     objects.scores.to(self.device), objects.regions.to(self.device))

    def _pointer_keys(self, contents: torch.Tensor | None, hidden: torch.Tensor, input_ids: torch.Tensor
                      ) -> torch.Tensor | None:
        """What ``[SEG]`` states point at, [B, K, H]: the object contents, or the last hidden states [B, T, H] at
        the object slots of ``input_ids`` [B, T] (``config.pointer_keys``)."""
        if contents is None or self.config.pointer_keys == "contents":
            return contents
        return hidden[input_ids == self.token_ids.object_slot].view(*contents.shape[:2], hidden.shape[-1])

    def _pointer(self, seg_hidden: torch.Tensor, keys: torch.Tensor | None, objects: ObjectTokens | None,
                 image_index: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Pointer logits [N, K] of each ``[SEG]`` over its image's object keys [B, K, H], and the pointed query
        [N, C]."""
        if keys is None or objects is None:
            return None, None
        logits = self.pointer(seg_hidden, keys[image_index])
        pointed = torch.einsum("nk,nkc->nc", logits.softmax(-1), objects.queries.to(logits.device)[image_index])
        return logits, pointed

    def _check_seg_counts(self, input_ids: torch.Tensor) -> torch.Tensor:
        seg = input_ids == self.token_ids.seg
        counts = seg.sum(1)
        if bool((counts > self.config.max_seg_tokens).any()):
            raise ValueError(f"a sequence has {int(counts.max())} {SEG_TOKEN} tokens, over max_seg_tokens="
                             f"{self.config.max_seg_tokens}")
        return seg

    def encode(self, image: Any, turns: Sequence[tuple[str, str | None]]) -> EncodedConversation:
        """Tokenize a conversation about ``image`` with this model's layout (object list, system prompt, limits)."""
        config = self.config
        return encode_conversation(self.processor, image, turns, num_objects=config.num_objects,
                                   system=config.system_prompt, max_length=config.max_length,
                                   image_placeholder=config.image_placeholder,
                                   objects_after_question=config.objects_after_question)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: GleeLLMBatch) -> GleeLLMOutput:
        """Token logits, one GLEE mask per ``[SEG]``, and (with ``batch.labels``) LISA's losses.

        ``batch.seg_targets`` must then hold one target per ``[SEG]`` in reading order.
        """
        device = self.device
        input_ids = batch.input_ids.to(device)
        seg = self._check_seg_counts(input_ids)
        images = batch.glee.tensor.to(device)
        features = self.glee_features(images)
        objects = batch.objects
        if self.object_projector is not None and objects is None:
            objects = self.propose(batch.glee, features)
        vision = {k: v.to(device) for k, v in batch.vision.items()}
        contents = self._object_contents(objects)
        with self.object_slots(contents):
            out = self.vlm(input_ids=input_ids, attention_mask=batch.attention_mask.to(device), **vision,
                           **token_type_inputs(self.processor, input_ids), output_hidden_states=True)
        seg_hidden, image_index = out.hidden_states[-1][seg], seg.nonzero()[:, 0]
        targets = self._checked_targets(batch, len(seg_hidden), images) if batch.labels is not None else None
        picked = self._mask_prompts(len(seg_hidden), targets is not None)
        keys = self._pointer_keys(contents, out.hidden_states[-1], input_ids)
        pointer_logits, pointed = self._pointer(seg_hidden, keys, objects, image_index)
        candidates = self.segment(images, features, image_index[picked], seg_hidden[picked],
                                  None if pointed is None else pointed[picked])
        chosen = candidates.best()
        losses = dict.fromkeys(("loss", "ce", "bce", "dice", "select", "box", "pointer"))
        if targets is not None:
            losses = {"pointer": None, **self._losses(out.logits, batch.labels.to(device), candidates, targets[picked])}
            chosen = losses.pop("matched", chosen)
            if pointer_logits is not None:
                losses["pointer"] = pointer_loss(pointer_logits, objects.mask_logits[image_index], targets)
                losses["loss"] = losses["loss"] + self.config.loss.pointer * losses["pointer"]
        rows = torch.arange(len(chosen), device=chosen.device)
        return GleeLLMOutput(
            losses["loss"], losses["ce"], losses["bce"], losses["dice"], losses["select"], losses["box"],
            losses["pointer"], out.logits, candidates.masks[rows, chosen], candidates.logits[rows, chosen].sigmoid(),
            candidates.boxes[rows, chosen], picked, image_index[picked], pointer_logits, objects)

    def _checked_targets(self, batch: GleeLLMBatch, n: int, images: torch.Tensor) -> torch.Tensor:
        targets = batch.seg_targets
        if n and (targets is None or len(targets) != n):
            raise ValueError(f"the batch has {n} {SEG_TOKEN} tokens but "
                             f"{0 if targets is None else len(targets)} seg_targets; give one mask per {SEG_TOKEN}")
        size = [images.shape[-2] // 4, images.shape[-1] // 4]
        if targets is None:
            return images.new_zeros(0, *size)
        if list(targets.shape[-2:]) != size:
            raise ValueError(f"seg_targets are {list(targets.shape[-2:])}, GLEE's masks {size}; build them with "
                             "mllm.batching.mask_target")
        return targets.to(device=images.device, dtype=images.dtype)

    def _mask_prompts(self, n: int, training: bool) -> torch.Tensor:
        """Indices of the ``[SEG]`` sent to GLEE: all, or a random ``train_mask_prompts`` of them in training."""
        limit = self.config.train_mask_prompts
        if training and self.training and limit is not None and n > limit:
            return torch.randperm(n, device=self.device)[:limit].sort().values
        return torch.arange(n, device=self.device)

    def _losses(self, logits: torch.Tensor, labels: torch.Tensor, candidates: SegCandidates,
                targets: torch.Tensor) -> dict[str, torch.Tensor]:
        weights = self.config.loss
        ce = token_ce(logits, labels)
        zero = ce * 0.0
        if len(candidates.logits) == 0:
            return {"loss": weights.ce * ce, "ce": ce, "bce": zero, "dice": zero, "select": zero, "box": zero}
        matched = match_candidates(candidates.masks, targets)
        rows = torch.arange(len(matched), device=matched.device)
        masks = candidates.masks[rows, matched]
        bce, dice = mask_bce(masks, targets).mean(), mask_dice(masks, targets).mean()
        select = nn.functional.cross_entropy(candidates.logits.float(), matched)
        box = zero
        if weights.box:
            box = (candidates.boxes[rows, matched] - mask_boxes(targets)).abs().sum(-1).mean()
        loss = weights.ce * ce + weights.bce * bce + weights.dice * dice + weights.select * select + weights.box * box
        return {"loss": loss, "ce": ce, "bce": bce, "dice": dice, "select": select, "box": box, "matched": matched}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(self, image: ImageSource, question: str, *, max_new_tokens: int | None = None,
                 mask_source: str | None = None) -> MllmAnswer:
        """Answer ``question`` about ``image``: text, one :class:`Detections` per ``[SEG]`` and cited objects.
        ``mask_source``: ``glee`` or ``pointer`` (default: ``config.mask_source``, see :class:`GleeLLMConfig`)."""
        mask_source = check_mask_source(mask_source or self.config.mask_source, self.config.num_objects)
        array = load_image(image)
        was_training = self.training
        self.eval()
        try:
            return self._generate(array, question, max_new_tokens or self.config.max_new_tokens, mask_source)
        finally:
            self.train(was_training)

    def _generate(self, array: np.ndarray, question: str, max_new_tokens: int, mask_source: str) -> MllmAnswer:
        if not question or not question.strip():
            raise ValueError("the question is empty")
        tokenizer = self.processor.tokenizer
        prompt = self.encode(array, [(question, None)])
        batch = collate([prompt], [array], self.glee.config.input, tokenizer.pad_token_id)
        images = batch.glee.tensor.to(self.device)
        features = self.glee_features(images)
        objects = self.propose(batch.glee, features) if self.object_projector is not None else None
        contents = self._object_contents(objects)
        vision = {k: v.to(self.device) for k, v in batch.vision.items()}
        ids = batch.input_ids.to(self.device)
        with self.object_slots(contents):
            generated = self.vlm.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), **vision, **token_type_inputs(self.processor, ids),
                max_new_tokens=max_new_tokens,
                do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                bad_words_ids=[[self.token_ids.object_slot]])
        new = generated[0, ids.shape[1]:] if generated.shape[1] > ids.shape[1] else generated[0, :0]
        if new.numel() and int(new[-1]) == tokenizer.eos_token_id:
            new = new[:-1]
        new = new[: self._answer_budget(new)]
        full = torch.cat([ids[0], new])[None]
        seg = self._check_seg_counts(full)
        with self.object_slots(contents):
            out = self.vlm(input_ids=full, attention_mask=torch.ones_like(full), **vision,
                           **token_type_inputs(self.processor, full), output_hidden_states=True)
        seg_hidden, image_index = out.hidden_states[-1][seg], seg.nonzero()[:, 0]
        keys = self._pointer_keys(contents, out.hidden_states[-1], full)
        pointer_logits, pointed = self._pointer(seg_hidden, keys, objects, image_index)
        text = tokenizer.decode(new, skip_special_tokens=False, clean_up_tokenization_spaces=False).strip()
        pointed_indices = [] if pointer_logits is None else distinct_objects(pointer_logits)
        candidates = (self.segment(images, features, image_index, seg_hidden, pointed) if mask_source == "glee"
                      else None)
        return self._answer(text, candidates, objects, batch.glee, pointed_indices)

    def _answer_budget(self, new: torch.Tensor) -> int:
        """Keep at most ``max_seg_tokens`` ``[SEG]`` of a generated answer (later ones are cut with their text)."""
        positions = (new == self.token_ids.seg).nonzero()[:, 0]
        limit = self.config.max_seg_tokens
        return int(positions[limit]) if len(positions) > limit else len(new)

    def _answer(self, text: str, candidates: SegCandidates | None, objects: ObjectTokens | None,
                glee_batch: processing.ImageBatch, pointed: list[int]) -> MllmAnswer:
        """The answer's spans, each with the object token its ``[SEG]`` points at (``pointed``) and its mask: GLEE's
        best candidate for it, or (``candidates`` None) the pointed object token's own mask."""
        spans = segment_spans(text)
        for span, index in zip(spans, pointed):
            span.object_index = index
        proposals = None if objects is None else self._object_detections(objects, glee_batch)
        chosen = None if candidates is None else candidates.best()
        for index, span in enumerate(spans):
            name = [span.phrase or "object"]
            if chosen is not None and index < len(chosen):
                q = int(chosen[index])
                span.detections = self._detections(candidates.masks[index, q][None], candidates.boxes[index, q][None],
                                                   candidates.logits[index, q].sigmoid()[None], name, glee_batch)
            elif chosen is None and span.object_index is not None:
                span.detections = replace(proposals[span.object_index], labels=np.zeros(1, np.int64), label_names=name)
        return MllmAnswer(text, spans, proposals, cited_indices(text))

    @torch.no_grad()
    def objects(self, image: ImageSource) -> Detections:
        """GLEE's K object proposals of ``image`` as the LLM sees them (row k = ``<objk>``), with masks."""
        glee_batch = self._object_batch(image)
        return self._object_detections(self.propose(glee_batch), glee_batch)

    @torch.no_grad()
    def object_tokens(self, image: ImageSource) -> ObjectTokens:
        """The object tokens' content of one image ([1, K, ...], on CPU), to precompute a frozen GLEE's proposals
        for training batches (``collate(objects=...)``)."""
        tokens = self.propose(self._object_batch(image))
        return ObjectTokens(*(getattr(tokens, name).cpu() for name in ObjectTokens.FIELDS))

    def _object_batch(self, image: ImageSource) -> processing.ImageBatch:
        if self.object_projector is None:
            raise ValueError("this model has no object tokens (config.num_objects = 0)")
        return processing.preprocess([load_image(image)], self.glee.config.input)

    def _object_detections(self, objects: ObjectTokens, glee_batch: processing.ImageBatch) -> Detections:
        names = [f"obj{k}" for k in range(len(objects.scores[0]))]
        hp, wp = glee_batch.padded_size
        (h, w), = glee_batch.image_sizes
        padded_boxes = objects.boxes[0] * objects.boxes.new_tensor([w / wp, h / hp, w / wp, h / hp])
        return self._detections(objects.mask_logits[0], padded_boxes, objects.scores[0], names, glee_batch,
                                labels=np.arange(len(names)))

    @staticmethod
    def _detections(mask_logits: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, names: list[str],
                    glee_batch: processing.ImageBatch, labels: np.ndarray | None = None) -> Detections:
        """GLEE outputs at the padded input (masks [N, h, w] logits, boxes [N, 4] cxcywh) -> original pixels."""
        (image_size,), (original,) = glee_batch.image_sizes, glee_batch.original_sizes
        masks = processing.upsample_masks(mask_logits.float(), glee_batch.padded_size, image_size, original) > 0
        xyxy = processing.scale_boxes(boxes.float(), glee_batch.padded_size, image_size, original, lsj=False)
        height, width = original
        xyxy = xyxy.clamp(min=0).minimum(xyxy.new_tensor([width, height, width, height]))
        return Detections(boxes=xyxy.cpu().numpy(), scores=scores.float().cpu().numpy(),
                          labels=np.zeros(len(names), np.int64) if labels is None else labels, label_names=names,
                          image_size=original, masks=masks.cpu().numpy())



def distinct_objects(logits: torch.Tensor) -> list[int]:
    """The object token each ``[SEG]`` of one answer points at, from pointer logits [N, K]: the most likely
    assignment (sum of log-probabilities, Hungarian) in which no two ``[SEG]`` share an object — two masks of
    one answer mean two objects; with more ``[SEG]`` than objects, each its own argmax."""
    if len(logits) < 2 or len(logits) > logits.shape[1]:
        return logits.argmax(-1).tolist()
    rows, cols = linear_sum_assignment(-logits.float().log_softmax(-1).cpu().numpy())
    return cols[np.argsort(rows)].tolist()


def region_parts(glee: GleeModel, config: GleeLLMConfig) -> tuple[int, ...]:
    """Widths of the parts of an object token's region vector, in :func:`mllm.objects.propose_objects`' order:
    mask features, mean RGB (3), silhouette (S²), class probabilities (one per category); absent parts left out."""
    parts = (glee.pixel_decoder.mask_features.out_channels, 3, config.silhouette_size ** 2,
             len(config.object_categories) * config.object_class_scores)
    return tuple(width for width in parts if width)


def word_rms(vlm: nn.Module) -> float:
    """Root mean square of the VLM's input word embeddings (the scale object tokens start at)."""
    weight = vlm.get_input_embeddings().weight
    return float(weight.detach().float().pow(2).mean().sqrt())


def mask_boxes(targets: torch.Tensor) -> torch.Tensor:
    """cxcywh boxes in [0, 1] of soft masks [N, h, w] (pixels >= 0.5; an empty mask gives a zero box)."""
    h, w = targets.shape[-2:]
    x0, y0, x1, y1 = torch.from_numpy(masks_to_boxes((targets >= 0.5).cpu().numpy())).to(targets).unbind(-1)
    return torch.stack([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], dim=-1)

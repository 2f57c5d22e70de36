"""GLEE's object decoder (``predictor``): MaskDINO's two-stage DINO decoder with text-conditioned heads.

Inference path (the official eval path, INITIAL_PRED on, two-stage, queries taken from the memory):

1. The multi-scale features (pixel-decoder order, finest first) are flattened in *reverse* order
   (coarsest first); every memory token gets a proposal box (centre of its cell, wh = 0.05 * 2**level in
   that order). Proposals with a coordinate outside (0.01, 0.99) get +inf box logits and zeroed memory but
   stay selectable.
2. ``enc_output`` + ``enc_output_norm`` project the memory; the proposal score is max_k of the class logits
   (categories), the grounding logit (referring) or ``confidence_score`` (visual prompts); the top
   ``num_queries`` proposals give the initial queries and reference boxes (the "interm" outputs).
3. The initial prediction and every decoder layer go through the heads: ``decoder_norm`` (applied a second
   time on the already normed decoder outputs, as in the official code), class logits
   ``(x @ category_embed) . class_embedding``, confidence ``confidence_score(x)``, and (last layer only in
   eval) masks ``mask_embed(x) . mask_features``.
4. Boxes are recomputed from the normed decoder outputs: ``sigmoid(bbox_embed(hs_l) + inverse_sigmoid(ref_l))``.

One box MLP is shared by the two-stage head and every layer (``_bbox_embed``, ``bbox_embed.{l}`` and
``decoder.bbox_embed.{l}`` are the same tensors) and ``decoder.norm`` is ``decoder_norm``.
The per-dataset label encoders exist for checkpoint compatibility; they are used only by the training-time
denoising queries (:meth:`MaskDINODecoder.prepare_for_dn`).
"""
from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .decoder_layer import DeformableTransformerDecoderLayer, PromptTokens, TransformerDecoder
from .layers import MLP, inverse_sigmoid

# Layer l of the decoder uses visual-prompt level ``l % VISUAL_PROMPT_LEVELS`` (official: the 4th level is unused).
VISUAL_PROMPT_LEVELS = 3

# Denoising label encoders: attribute name -> number of labels (official names and sizes).
LABEL_ENCODER_SIZES: dict[str, int] = {
    "coco_label_enc": 80,
    "obj365_label_enc": 100,
    "vg_label_enc": 200,
    "grounding_label_enc": 1,
    "ytvis19_label_enc": 40,
    "ytvis21_label_enc": 40,
    "ovis_label_enc": 25,
    "uvo_label_enc": 81,
    "bdd_det": 10,
    "bdd_inst": 8,
}

# The official training task (dataset) names and the label encoder each one denoises with.
DATASET_LABEL_ENCODER: dict[str, str] = {
    **dict.fromkeys(["coco", "coco_clip", "coconomask"], "coco_label_enc"),
    **dict.fromkeys(["obj365", "obj365_clip", "lvis", "lvis_clip", "openimage", "openimage_clip", "grit"],
                    "obj365_label_enc"),
    "vg": "vg_label_enc",
    **dict.fromkeys(["grounding", "rvos", "sa1b", "sa1b_clip", "burst", "ytbvos"], "grounding_label_enc"),
    **dict.fromkeys(["ytvis19", "image_yt19"], "ytvis19_label_enc"),
    **dict.fromkeys(["ytvis21", "image_yt21"], "ytvis21_label_enc"),
    **dict.fromkeys(["ovis", "image_o"], "ovis_label_enc"),
    "uvo_video": "uvo_label_enc",
    "bdd_det": "bdd_det",
    **dict.fromkeys(["bdd_inst", "bdd_track_seg", "bdd_track_box"], "bdd_inst"),
}


class PromptMode(str, enum.Enum):
    """What conditions the decoder.

    * ``CATEGORY``: class embeddings [K, C]; K logits per query.
    * ``REFERRING``: one expression per image; one logit per query against ``grounding_class`` [B, C]; the
      expression's tokens join the decoder self-attention.
    * ``VISUAL``: class embeddings for the logits, proposals ranked by ``confidence_score``; the visual-prompt
      tokens of level ``l % 3`` join the self-attention of layer l.
    """

    CATEGORY = "category"
    REFERRING = "referring"
    VISUAL = "visual"


@dataclass
class DenoisingQueries:
    """Training-only denoising (DN) queries, prepended to the matching queries.

    ``label_embed`` [B, pad, C] and ``boxes_unsigmoid`` [B, pad, 4]: noised ground truth, zeros in unused
    slots; ``attn_mask`` [pad + Q, pad + Q] bool (True = blocked): matching queries do not see DN queries and
    DN groups do not see each other. ``num_groups`` groups of ``single_pad`` slots each
    (``pad_size = num_groups * single_pad``). ``known_labels`` [G*N] and ``known_boxes`` [G*N, 4] are the
    clean targets of the filled slots, ``batch_index`` [G*N] and ``query_index`` [G*N] where they sit.
    """

    label_embed: torch.Tensor
    boxes_unsigmoid: torch.Tensor
    attn_mask: torch.Tensor
    pad_size: int
    single_pad: int
    num_groups: int
    known_labels: torch.Tensor
    known_boxes: torch.Tensor
    batch_index: torch.Tensor
    query_index: torch.Tensor


@dataclass
class DenoisingOutput:
    """Predictions of the DN queries: ``layer_*`` [L+1, B, pad, ...] and ``layer_masks`` (L+1 entries)."""

    layer_logits: torch.Tensor
    layer_boxes: torch.Tensor
    layer_scores: torch.Tensor
    layer_masks: list[torch.Tensor | None]


@dataclass
class DecoderOutput:
    """Decoder predictions. Boxes are cxcywh in [0, 1] of the padded input; masks are logits at stride 4.

    Final: ``pred_logits`` [B, Q, K], ``pred_boxes`` [B, Q, 4], ``pred_masks`` [B, Q, H/4, W/4],
    ``pred_scores`` [B, Q, 1] (confidence logits), ``pred_track_embed`` [B, Q, C] (last normed hs).
    Per step (index 0 = initial prediction, l + 1 = after layer l): ``layer_logits`` [L+1, B, Q, K],
    ``layer_boxes`` [L+1, B, Q, 4], ``layer_scores`` [L+1, B, Q, 1], ``layer_masks`` (L+1 entries, None where
    not predicted: in eval only the last layer predicts masks). ``hs`` [L, B, Q, C] (normed layer outputs);
    ``references`` [L+1, B, Q, 4] (internal reference boxes, sigmoid space).
    Two-stage head on the selected proposals: ``interm_logits``, ``interm_boxes``, ``interm_scores``,
    ``interm_masks`` (None in eval unless asked for); ``proposal_scores`` [B, S] (decoder level order) and
    ``proposal_index`` [B, Q].
    ``denoising``: predictions of the DN queries when DN queries were given.
    """

    pred_logits: torch.Tensor
    pred_boxes: torch.Tensor
    pred_masks: torch.Tensor
    pred_scores: torch.Tensor
    pred_track_embed: torch.Tensor
    layer_logits: torch.Tensor
    layer_boxes: torch.Tensor
    layer_scores: torch.Tensor
    layer_masks: list[torch.Tensor | None]
    hs: torch.Tensor
    references: torch.Tensor
    interm_logits: torch.Tensor
    interm_boxes: torch.Tensor
    interm_scores: torch.Tensor
    interm_masks: torch.Tensor | None
    proposal_scores: torch.Tensor
    proposal_index: torch.Tensor
    denoising: DenoisingOutput | None = None


def encoder_output_proposals(memory: torch.Tensor, spatial_shapes: Sequence[tuple[int, int]]
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-stage proposals for every memory token [B, S, C] (levels in ``spatial_shapes`` order).

    Level ``lvl`` proposes the cell centre with wh = 0.05 * 2**lvl. Returns (memory with invalid tokens
    zeroed, proposal box logits [B, S, 4] with +inf for invalid ones); a proposal is valid when all its
    coordinates lie in (0.01, 0.99).
    """
    proposals = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        ys = (torch.arange(h, dtype=torch.float32, device=memory.device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=memory.device) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        wh = torch.full_like(grid_x, 0.05 * 2.0**lvl)
        proposals.append(torch.stack([grid_x, grid_y, wh, wh], dim=-1).view(-1, 4))
    proposals = torch.cat(proposals)[None].expand(memory.shape[0], -1, -1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
    logits = torch.log(proposals / (1 - proposals)).masked_fill(~valid, float("inf"))
    return memory.masked_fill(~valid, 0.0), logits.to(memory.dtype)


def _gather_queries(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, S, D], index [B, Q] -> [B, Q, D]."""
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


class MaskDINODecoder(nn.Module):
    """GLEE's object decoder (official ``predictor``); see the module docstring for the computation.

    Presets: tiny (hidden_dim 256, num_queries 40, dim_feedforward 128, dec_layers 3); lite-r50, plus-swinl
    and pro-eva02l (hidden_dim 256, num_queries 300, dim_feedforward 2048, dec_layers 9). All use nheads 8,
    num_feature_levels 4, dec_n_points 4, mask_dim 256, dim_projection 256, dn_num 100, noise_scale 0.4.
    """

    def __init__(self, *, hidden_dim: int = 256, num_queries: int = 300, nheads: int = 8, dim_feedforward: int = 2048,
                 dec_layers: int = 9, num_feature_levels: int = 4, dec_n_points: int = 4, mask_dim: int = 256,
                 dim_projection: int = 256, dn_num: int = 100, noise_scale: float = 0.4):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_queries = num_queries
        self.num_layers = dec_layers
        self.num_feature_levels = num_feature_levels
        self.mask_dim = mask_dim
        self.dim_projection = dim_projection
        self.dn_num = dn_num
        self.noise_scale = noise_scale

        # Official init is U(0, 1), whose class logits start in the thousands; N(0, 1/hidden_dim^2) starts them
        # near ±1. Only training from scratch sees the difference (checkpoints overwrite it).
        self.category_embed = nn.Parameter(torch.randn(hidden_dim, dim_projection) / hidden_dim)
        self.enc_output = nn.Linear(hidden_dim, hidden_dim)
        self.enc_output_norm = nn.LayerNorm(hidden_dim)
        self.confidence_score = MLP(hidden_dim, hidden_dim, 1, 2)
        for name, size in LABEL_ENCODER_SIZES.items():
            self.add_module(name, nn.Embedding(size, hidden_dim))
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        box_mlp = MLP(hidden_dim, hidden_dim, 4, 3)
        nn.init.zeros_(box_mlp.layers[-1].weight)
        nn.init.zeros_(box_mlp.layers[-1].bias)
        bbox_embed = nn.ModuleList([box_mlp] * dec_layers)
        layers = [
            DeformableTransformerDecoderLayer(d_model=hidden_dim, d_ffn=dim_feedforward, n_levels=num_feature_levels,
                                              n_heads=nheads, n_points=dec_n_points)
            for _ in range(dec_layers)
        ]
        self.decoder = TransformerDecoder(layers=layers, norm=self.decoder_norm, bbox_embed=bbox_embed,
                                          d_model=hidden_dim)
        self._bbox_embed = box_mlp
        self.bbox_embed = bbox_embed

    # ------------------------------------------------------------------ heads
    def class_logits(self, x: torch.Tensor, class_embeddings: torch.Tensor | None,
                     grounding_class: torch.Tensor | None) -> torch.Tensor:
        """x [B, N, C] -> [B, N, K] against class_embeddings [K, D], or [B, N, 1] against grounding_class [B, D]."""
        projected = x @ self.category_embed
        if grounding_class is not None:
            return torch.einsum("bqc,bc->bq", projected, grounding_class).unsqueeze(-1)
        return torch.einsum("bqc,nc->bqn", projected, class_embeddings)

    def prediction_heads(self, queries: torch.Tensor, mask_features: torch.Tensor,
                         class_embeddings: torch.Tensor | None, grounding_class: torch.Tensor | None, with_masks: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """queries [B, Q, C] -> (logits [B, Q, K], confidence [B, Q, 1], masks [B, Q, H, W] or None).

        The queries are normed by ``decoder_norm`` first.
        """
        x = self.decoder_norm(queries)
        logits = self.class_logits(x, class_embeddings, grounding_class)
        scores = self.confidence_score(x)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(x), mask_features) if with_masks else None
        return logits, scores, masks

    # ------------------------------------------------------------------ inputs
    def _check_inputs(self, features: Sequence[torch.Tensor], mask_features: torch.Tensor, mode: PromptMode,
                      class_embeddings: torch.Tensor | None, grounding_class: torch.Tensor | None,
                      text_prompt: PromptTokens | None, visual_prompts: Sequence[PromptTokens] | None) -> None:
        if len(features) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(features)}")
        batch = features[0].shape[0]
        for i, f in enumerate(features):
            if f.dim() != 4 or f.shape[:2] != (batch, self.hidden_dim):
                raise ValueError(f"multi_scale_features[{i}] must be [{batch}, {self.hidden_dim}, h, w], "
                                 f"got {tuple(f.shape)}")
        if mask_features.dim() != 4 or mask_features.shape[:2] != (batch, self.mask_dim):
            raise ValueError(f"mask_features must be [{batch}, {self.mask_dim}, H, W], "
                             f"got {tuple(mask_features.shape)}")
        if mode is PromptMode.REFERRING:
            if grounding_class is None or grounding_class.shape != (batch, self.dim_projection):
                raise ValueError(f"referring mode needs grounding_class [{batch}, {self.dim_projection}], got "
                                 f"{None if grounding_class is None else tuple(grounding_class.shape)}")
            if text_prompt is None or text_prompt.tokens.shape[::2] != (batch, self.hidden_dim):
                raise ValueError(f"referring mode needs text_prompt tokens [{batch}, L, {self.hidden_dim}], got "
                                 f"{None if text_prompt is None else tuple(text_prompt.tokens.shape)}")
            if class_embeddings is not None or visual_prompts is not None:
                raise ValueError("referring mode takes grounding_class and text_prompt only")
            return
        if class_embeddings is None or class_embeddings.dim() != 2 or class_embeddings.shape[1] != self.dim_projection:
            raise ValueError(f"{mode.value} mode needs class_embeddings [K, {self.dim_projection}], got "
                             f"{None if class_embeddings is None else tuple(class_embeddings.shape)}")
        if grounding_class is not None or text_prompt is not None:
            raise ValueError(f"{mode.value} mode does not take grounding_class or text_prompt")
        if mode is PromptMode.VISUAL:
            if visual_prompts is None or len(visual_prompts) < VISUAL_PROMPT_LEVELS:
                raise ValueError(f"visual mode needs at least {VISUAL_PROMPT_LEVELS} levels of visual_prompts")
            if any(p.tokens.shape[::2] != (batch, self.hidden_dim) for p in visual_prompts):
                raise ValueError(f"visual_prompts tokens must be [{batch}, P, {self.hidden_dim}], got "
                                 f"{[tuple(p.tokens.shape) for p in visual_prompts]}")
        elif visual_prompts is not None:
            raise ValueError("category mode does not take visual_prompts")

    def _layer_prompts(self, mode: PromptMode, text_prompt: PromptTokens | None,
                       visual_prompts: Sequence[PromptTokens] | None) -> list[PromptTokens | None] | None:
        if mode is PromptMode.REFERRING:
            return [text_prompt] * self.num_layers
        if mode is PromptMode.VISUAL:
            return [visual_prompts[layer % VISUAL_PROMPT_LEVELS] for layer in range(self.num_layers)]
        return None

    # ------------------------------------------------------------------ forward
    def forward(self, multi_scale_features: Sequence[torch.Tensor], mask_features: torch.Tensor, *,
                mode: PromptMode | str = PromptMode.CATEGORY, class_embeddings: torch.Tensor | None = None,
                grounding_class: torch.Tensor | None = None, text_prompt: PromptTokens | None = None,
                visual_prompts: Sequence[PromptTokens] | None = None,
                denoising: DenoisingQueries | None = None, with_interm_masks: bool = False) -> DecoderOutput:
        """Decode objects.

        ``multi_scale_features``: ``num_feature_levels`` maps [B, hidden_dim, h_l, w_l] in pixel-decoder order
        (strides 8, 16, 32, 64); ``mask_features`` [B, mask_dim, H/4, W/4].
        ``mode`` CATEGORY: ``class_embeddings`` [K, dim_projection]. REFERRING: ``grounding_class``
        [B, dim_projection] and ``text_prompt`` (tokens [B, L, hidden_dim], True = PAD). VISUAL:
        ``class_embeddings`` and ``visual_prompts`` (one :class:`PromptTokens` per feature level).
        ``denoising``: training-only DN queries from :meth:`prepare_for_dn`. ``with_interm_masks``: also predict
        the two-stage proposals' masks in eval (training always does; only its loss reads them).
        """
        mode = PromptMode(mode)
        self._check_inputs(multi_scale_features, mask_features, mode, class_embeddings, grounding_class, text_prompt,
                           visual_prompts)
        levels = list(multi_scale_features)[::-1]
        shapes = [tuple(f.shape[-2:]) for f in levels]
        memory = torch.cat([f.flatten(2).transpose(1, 2) for f in levels], dim=1)
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=memory.device)
        level_start_index = torch.cat([spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]])
        heads = dict(mask_features=mask_features, class_embeddings=class_embeddings, grounding_class=grounding_class)

        output_memory, output_proposals = encoder_output_proposals(memory, shapes)
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        if mode is PromptMode.VISUAL:
            enc_scores = self.confidence_score(output_memory)
        else:
            enc_scores = self.class_logits(output_memory, class_embeddings, grounding_class)
        proposal_scores = enc_scores.max(-1).values
        proposal_index = proposal_scores.topk(self.num_queries, dim=1).indices
        tgt_undetached = _gather_queries(output_memory, proposal_index)
        # the box head is row-wise: run it on the selected proposals only, not on every memory token
        refpoint_undetached = self._bbox_embed(tgt_undetached) + _gather_queries(output_proposals, proposal_index)
        interm_logits, interm_scores, interm_masks = self.prediction_heads(
            tgt_undetached, with_masks=self.training or with_interm_masks, **heads)
        refpoint = refpoint_undetached.detach()
        tgt = tgt_undetached.detach()

        pad = 0
        self_attn_mask = None
        if denoising is not None:
            if denoising.label_embed.shape[0] != tgt.shape[0]:
                raise ValueError(f"denoising queries are for batch {denoising.label_embed.shape[0]}, "
                                 f"features for batch {tgt.shape[0]}")
            pad = denoising.pad_size
            tgt = torch.cat([denoising.label_embed.to(tgt.dtype), tgt], dim=1)
            refpoint = torch.cat([denoising.boxes_unsigmoid.to(refpoint.dtype), refpoint], dim=1)
            self_attn_mask = denoising.attn_mask

        logits, scores, masks = self.prediction_heads(tgt, with_masks=self.training, **heads)
        layer_logits, layer_scores, layer_masks = [logits], [scores], [masks]
        hs, references = self.decoder(tgt, memory, refpoint, spatial_shapes, level_start_index,
                                      self_attn_mask=self_attn_mask,
                                      layer_prompts=self._layer_prompts(mode, text_prompt, visual_prompts))
        for i, h in enumerate(hs):
            logits, scores, masks = self.prediction_heads(h, with_masks=self.training or i == len(hs) - 1, **heads)
            layer_logits.append(logits)
            layer_scores.append(scores)
            layer_masks.append(masks)
        layer_boxes = [refpoint.sigmoid()] + [
            (box_mlp(h) + inverse_sigmoid(ref)).sigmoid() for box_mlp, h, ref in zip(self.bbox_embed, hs, references)
        ]

        stacked = {"layer_logits": torch.stack(layer_logits), "layer_boxes": torch.stack(layer_boxes),
                   "layer_scores": torch.stack(layer_scores), "hs": torch.stack(hs),
                   "references": torch.stack(references)}
        dn_output = None
        if denoising is not None:
            dn_output = DenoisingOutput(
                layer_logits=stacked["layer_logits"][:, :, :pad], layer_boxes=stacked["layer_boxes"][:, :, :pad],
                layer_scores=stacked["layer_scores"][:, :, :pad],
                layer_masks=[None if m is None else m[:, :pad] for m in layer_masks],
            )
            stacked = {k: v[:, :, pad:] for k, v in stacked.items()}
            layer_masks = [None if m is None else m[:, pad:] for m in layer_masks]
        return DecoderOutput(
            pred_logits=stacked["layer_logits"][-1], pred_boxes=stacked["layer_boxes"][-1], pred_masks=layer_masks[-1],
            pred_scores=stacked["layer_scores"][-1], pred_track_embed=stacked["hs"][-1], layer_masks=layer_masks,
            interm_logits=interm_logits, interm_boxes=refpoint_undetached.sigmoid(), interm_scores=interm_scores,
            interm_masks=interm_masks, proposal_scores=proposal_scores, proposal_index=proposal_index,
            denoising=dn_output, **stacked,
        )

    # ------------------------------------------------------------------ training: denoising queries
    def prepare_for_dn(self, labels: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor], *, label_encoder: str,
                       generator: torch.Generator | None = None) -> DenoisingQueries | None:
        """Build DN queries ("standard" DN of MaskDINO) from per-image targets.

        ``labels[i]`` [n_i] int64 and ``boxes[i]`` [n_i, 4] cxcywh in [0, 1]; ``label_encoder``: one of
        ``LABEL_ENCODER_SIZES`` (see ``DATASET_LABEL_ENCODER`` for the official dataset mapping). The targets
        are repeated in ``dn_num // max_i n_i`` groups; each label is replaced by a random one with probability
        ``noise_scale / 2`` and each box is jittered by up to ``noise_scale`` * (w/2, h/2, w, h), then clamped
        to [0, 1]. Returns None when no image has a target.
        """
        if label_encoder not in LABEL_ENCODER_SIZES:
            raise ValueError(f"unknown label encoder {label_encoder!r}; expected one of {list(LABEL_ENCODER_SIZES)}")
        if len(labels) != len(boxes):
            raise ValueError(f"got labels for {len(labels)} images but boxes for {len(boxes)}")
        known_num = [int(lab.numel()) for lab in labels]
        single_pad = max(known_num, default=0)
        num_groups = self.dn_num // single_pad if single_pad else 0
        if num_groups == 0:
            return None
        encoder: nn.Embedding = getattr(self, label_encoder)
        device = encoder.weight.device
        batch_index = torch.cat([torch.full((n,), i, dtype=torch.long, device=device) for i, n in enumerate(known_num)])
        known_labels = torch.cat(list(labels)).to(device).long().repeat(num_groups)
        known_boxes = torch.cat(list(boxes)).to(device).float().repeat(num_groups, 1)
        known_bid = batch_index.repeat(num_groups)

        noisy_labels, noisy_boxes = known_labels, known_boxes
        if self.noise_scale > 0:
            flip = torch.rand(known_labels.shape, generator=generator, device=device) < self.noise_scale * 0.5
            random_labels = torch.randint(0, encoder.num_embeddings, known_labels.shape, generator=generator,
                                          device=device)
            noisy_labels = torch.where(flip, random_labels, known_labels)
            diff = torch.cat([known_boxes[:, 2:] / 2, known_boxes[:, 2:]], dim=1)
            jitter = torch.rand(known_boxes.shape, generator=generator, device=device) * 2 - 1.0
            noisy_boxes = (known_boxes + jitter * diff * self.noise_scale).clamp(min=0.0, max=1.0)

        pad_size = single_pad * num_groups
        slot = torch.cat([torch.arange(n, device=device) for n in known_num])
        query_index = torch.cat([slot + single_pad * g for g in range(num_groups)])
        label_embed = encoder.weight.new_zeros(len(labels), pad_size, self.hidden_dim)
        boxes_unsigmoid = encoder.weight.new_zeros(len(labels), pad_size, 4)
        label_embed[known_bid, query_index] = encoder(noisy_labels)
        boxes_unsigmoid[known_bid, query_index] = inverse_sigmoid(noisy_boxes).to(boxes_unsigmoid.dtype)

        size = pad_size + self.num_queries
        attn_mask = torch.zeros(size, size, dtype=torch.bool, device=device)
        attn_mask[pad_size:, :pad_size] = True
        group = torch.arange(pad_size, device=device) // single_pad
        attn_mask[:pad_size, :pad_size] = group[:, None] != group[None, :]
        return DenoisingQueries(
            label_embed=label_embed, boxes_unsigmoid=boxes_unsigmoid, attn_mask=attn_mask, pad_size=pad_size,
            single_pad=single_pad, num_groups=num_groups, known_labels=known_labels, known_boxes=known_boxes,
            batch_index=known_bid, query_index=query_index,
        )

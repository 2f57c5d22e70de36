"""Memory of a 7B LLaVA-class model with a frozen GLEE-Lite: fp16, 8-bit and 4-bit, inference and a QLoRA step.

    python benchmarks/mllm_memory.py [--scale 7b|13b|1b] [--layers N] [--vision 224|336] [--seq-len 512] [--batch 2]
        [--train-rows all|new] [--glee-size 1024] [--glee-grad encoder|decoder] [--budget-gib 24]
        [--measure] [--modes fp16 int8 nf4] [--json PATH]

Computed (always, CPU only): parameters are counted exactly by instantiating the architectures on the meta
device (transformers ``LlavaForConditionalGeneration`` of LLaMA-7B + CLIP ViT-L/14, ``GleeModel`` lite-r50);
memory follows the byte formulas printed under the table (``METHOD``). Measured (``--measure``, CUDA only):
a random-weight model of the same configuration is saved once, loaded per mode (bitsandbytes for int8 / nf4)
in its own process, and ``torch.cuda.max_memory_allocated()`` is read for one inference forward and for one
steady-state QLoRA step with and without gradient checkpointing. ``--scale 1b`` or ``--layers N`` shrink the
LLM so the measurement fits a short GPU slot; the computed figures use the same shrunken configuration, so
the two columns compare like with like. Training settings follow LISA (``shared/reference/LISA.md`` §8-§9):
LoRA r=8 on ``q_proj``/``v_proj``, full ``embed_tokens`` + ``lm_head`` (``--train-rows new``: only the added
tokens' rows), trainable ``text_hidden_fcs``, sequence 512 (257 text tokens + 256 image positions),
micro-batch 2, bf16 activations, AdamW; GLEE and CLIP frozen.

Quick GPU check (about 2-3 minutes on one H200; needs peft and bitsandbytes): ``--layers 8 --measure`` keeps the
7B widths, vocabulary, CLIP tower and GLEE, so every per-layer and per-image term is checked at full size.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GIB = 2**30
MODES = ("fp16", "int8", "nf4")
PHASES = ("inference", "train", "train+ckpt")
# CUDA context, cuBLAS/cuDNN workspaces and allocator slack that a card loses outside max_memory_allocated().
RESERVE_GIB = 0.75
BASE_VOCAB = 32000  # LLaMA / Vicuna tokenizer


# ---------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class LLMSize:
    """A LLaMA-style language model (multi-head attention, SwiGLU MLP)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int


SCALES = {
    "7b": LLMSize(4096, 11008, 32, 32),   # LLaMA-2-7B / Vicuna-7B
    "13b": LLMSize(5120, 13824, 40, 40),  # LLaMA-2-13B (LISA's 13B models)
    "1b": LLMSize(2048, 5632, 22, 32),    # a 1.1B LLaMA-style model (TinyLlama widths, full multi-head attention)
    "tiny": LLMSize(256, 688, 2, 4),      # code-path check only
}

# vision side -> (image size, patches, projector): 224 = LISA's LLaVA v1 (one Linear), 336 = LLaVA-1.5 (2-layer MLP)
VISION = {224: (224, 256, "linear"), 336: (336, 576, "mlp2")}


@dataclass(frozen=True)
class Setup:
    """Everything the computed model and the measurement depend on."""

    scale: str = "7b"
    layers: int | None = None          # override the LLM depth (e.g. 8 for a quick GPU check at 7B width)
    vision: int = 224
    text_tokens: int = 257             # LISA truncates ids to model_max_length - 255 = 257
    batch: int = 2                     # training micro-batch (sequences; LISA: 2 images x up to 3 conversations)
    infer_batch: int = 1
    lora_rank: int = 8
    added_tokens: int = 3              # [SEG], <im_start>, <im_end> -> vocabulary 32003
    train_rows: str = "all"            # "all": LISA trains the whole embed_tokens and lm_head; "new": added rows only
    glee_preset: str = "lite-r50"
    glee_size: int = 1024              # GLEE input side (LISA's SAM path pads to 1024 x 1024)
    glee_grad: str = "encoder"         # "encoder": [SEG] enters early fusion (grads through pixel decoder + decoder)
    #                                    "decoder": early fusion off, grads through the object decoder only
    dropout_mask_bytes: int = 1        # LoRA dropout mask per element: 1 (CUDA bool mask), CPU keeps an input-dtype mask

    @property
    def llm(self) -> LLMSize:
        size = SCALES[self.scale]
        return size if self.layers is None else dataclasses.replace(size, layers=self.layers)

    @property
    def patches(self) -> int:
        return VISION[self.vision][1]

    @property
    def seq_len(self) -> int:
        """Positions the LLM sees: text tokens with the one image placeholder expanded to all patches."""
        return self.text_tokens + self.patches - 1

    @property
    def vocab(self) -> int:
        return BASE_VOCAB + self.added_tokens

    def label(self) -> str:
        llm = self.llm
        return (f"{self.scale} LLM (h {llm.hidden}, {llm.layers} layers), CLIP-L/14@{self.vision}, "
                f"seq {self.seq_len}, micro-batch {self.batch}, LoRA r={self.lora_rank}, rows={self.train_rows}, "
                f"GLEE {self.glee_preset}@{self.glee_size}² grads via {self.glee_grad}")


def llava_config(setup: Setup):
    """transformers ``LlavaConfig``: LLaMA text model + CLIP ViT-L/14 vision tower."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    llm = setup.llm
    image, patches, projector = VISION[setup.vision]
    text = LlamaConfig(hidden_size=llm.hidden, intermediate_size=llm.intermediate, num_hidden_layers=llm.layers,
                       num_attention_heads=llm.heads, num_key_value_heads=llm.heads, vocab_size=setup.vocab,
                       max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=image, patch_size=14, projection_dim=768)
    # The image placeholder must be an id of the embedding table; random weights make its choice irrelevant.
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=setup.vocab - 1,
                       vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=patches,
                       tie_word_embeddings=False)


def set_lisa_projector(model, setup: Setup, dtype=None) -> None:
    """LISA (LLaVA v1) projects CLIP features with one Linear; HF's LLaVA projector is LLaVA-1.5's 2-layer MLP."""
    from torch import nn

    if VISION[setup.vision][2] == "linear":
        device = next(model.model.multi_modal_projector.parameters()).device
        model.model.multi_modal_projector = nn.Linear(1024, setup.llm.hidden, device=device, dtype=dtype)


def build_glee(preset: str):
    """``GleeModel.from_config(preset)`` (random weights) on the current default device."""
    try:
        from glee_core import GleeModel  # noqa: F401  (exported there by newer checkouts)
    except ImportError:
        from glee_core.modeling.glee import GleeModel
    return GleeModel.from_config(preset)


# ---------------------------------------------------------------------------------------------- parameter counts
@dataclass
class Counts:
    """Exact parameter counts (meta-device instantiation) and the shapes the formulas need."""

    lm_linear: int            # decoder-layer Linear weights of the LLM: the quantizable part
    lm_linear_rows: int       # their output rows (int8 keeps one fp32 scale per row)
    lm_linears: int           # how many such Linear modules
    lm_linear_max: int        # largest one (out * in): the dequantisation buffer of a 4-/8-bit backward
    embed: int
    lm_head: int
    norms: int
    vision: int
    projector: int
    glee: int
    glee_text: int            # GLEE's CLIP text tower(s): unused when [SEG] embeddings replace text
    lora: int                 # LoRA A+B on q_proj, v_proj of the LLM
    fcs: int                  # LISA's text_hidden_fcs: Linear(H, H) -> ReLU -> Linear(H, GLEE hidden)
    new_rows: int             # added-token rows of embed_tokens + lm_head
    glee_arch: dict = field(default_factory=dict)

    @property
    def lm_total(self) -> int:
        return self.lm_linear + self.embed + self.lm_head + self.norms

    @property
    def kept16(self) -> int:
        return self.embed + self.lm_head + self.norms


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


@functools.lru_cache(maxsize=8)
def _llava_counts(setup: Setup) -> dict:
    import torch
    from torch import nn
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(llava_config(setup))
        set_lisa_projector(model, setup)
    lm = model.model.language_model
    linears = [m for m in lm.layers.modules() if isinstance(m, nn.Linear)]
    lora = sum(setup.lora_rank * (m.in_features + m.out_features) for name, m in lm.layers.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in ("q_proj", "v_proj"))
    h = setup.llm.hidden
    return dict(
        lm_linear=sum(m.weight.numel() for m in linears), lm_linear_rows=sum(m.out_features for m in linears),
        lm_linears=len(linears), lm_linear_max=max(m.weight.numel() for m in linears),
        embed=lm.embed_tokens.weight.numel(), lm_head=model.lm_head.weight.numel(),
        norms=_numel(lm) - sum(m.weight.numel() for m in linears) - lm.embed_tokens.weight.numel(),
        vision=_numel(model.model.vision_tower), projector=_numel(model.model.multi_modal_projector),
        lora=lora, new_rows=2 * setup.added_tokens * h,
    )


@functools.lru_cache(maxsize=4)
def _glee_counts(preset: str) -> tuple[int, int, dict]:
    import torch

    with torch.device("meta"):
        glee = build_glee(preset)
    text = _numel(glee.text_encoder) + (_numel(glee.text_encoder_teacher) if hasattr(glee, "text_encoder_teacher") else 0)
    pd = glee.pixel_decoder
    enc = pd.transformer.encoder
    attn = enc.layers[0].self_attn
    fuse = next((v for v in enc.vl_layers if hasattr(v, "b_attn")), None)
    strides = dict(glee.backbone.out_strides)
    channels = dict(glee.backbone.out_channels)
    enc_strides = [strides[f] for f in pd.encoder_features]
    extra = pd.total_num_feature_levels - len(enc_strides)
    enc_strides += [max(enc_strides) * 2 ** (i + 1) for i in range(extra)]
    dec = glee.predictor
    dec_ffn = dec.decoder.layers[0].linear1.out_features if hasattr(dec.decoder.layers[0], "linear1") else 2048
    arch = dict(
        backbone={f: (channels[f], strides[f]) for f in glee.backbone.out_features},
        enc_strides=enc_strides, conv_dim=attn.d_model, heads=attn.n_heads, levels=attn.n_levels,
        points=attn.n_points, enc_layers=len(enc.layers), enc_ffn=enc.layers[0].linear1.out_features,
        fuse_dim=(fuse.b_attn.attn.num_heads * fuse.b_attn.attn.head_dim) if fuse is not None else 0,
        mask_dim=pd.mask_features.out_channels, mask_stride=min(strides.values()),
        queries=dec.num_queries, dec_layers=dec.num_layers, dec_ffn=dec_ffn, hidden=glee.config.hidden_dim,
    )
    return _numel(glee), text, arch


def count_parameters(setup: Setup) -> Counts:
    """Exact counts from meta-device models of the setup's LLaVA and GLEE architectures."""
    llava = _llava_counts(setup)
    glee, glee_text, arch = _glee_counts(setup.glee_preset)
    h = setup.llm.hidden
    fcs = h * h + h + h * arch["hidden"] + arch["hidden"]
    return Counts(**llava, glee=glee, glee_text=glee_text, fcs=fcs, glee_arch=arch)


def llama_params_formula(hidden: int, intermediate: int, layers: int, vocab: int) -> int:
    """Analytic LLaMA parameter count (embeddings and untied lm_head included)."""
    per_layer = 4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden
    return layers * per_layer + 2 * vocab * hidden + hidden


# ---------------------------------------------------------------------------------------------- byte formulas
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)   # 4-bit code + 8-bit absmax per 64 weights + fp32 absmax2 per 256 absmax
NF4_TENSOR_BYTES = 256 * 4 + 64            # per quantized tensor: fp32 double-quant code table + state


def weight_bytes(counts: Counts, mode: str) -> dict[str, float]:
    """Bytes of every part's weights. Only the LLM's decoder Linears are quantized (bitsandbytes, as LISA's
    loading does with vision/segmentation parts skipped); embeddings, lm_head, norms, CLIP, projector and GLEE
    stay 16-bit."""
    if mode == "fp16":
        linear = 2.0 * counts.lm_linear
    elif mode == "int8":
        linear = counts.lm_linear + 4.0 * counts.lm_linear_rows      # int8 weight + fp32 scale per output row
    elif mode == "nf4":
        linear = counts.lm_linear * NF4_BITS / 8 + NF4_TENSOR_BYTES * counts.lm_linears
    else:
        raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
    return {"lm_linear": linear, "lm_16bit": 2.0 * counts.kept16, "vision": 2.0 * counts.vision,
            "projector": 2.0 * counts.projector, "glee": 2.0 * counts.glee, "fcs": 2.0 * counts.fcs}


def llm_layer_saved_bytes(setup: Setup, mode: str) -> float:
    """Bytes one decoder layer saves for backward, per token, LoRA on q/v of a frozen base, bf16 activations,
    SDPA (flash/mem-efficient: q, k, v, out and an fp32 log-sum-exp per head).

      RMSNorm x2  : fp32 copy of the input + fp32 rsqrt              2 * (4h + 4)
      LoRA q, v   : dropout mask + fp32 dropped input + fp32 A output 2 * (m*h + 4h + 4r)   (peft runs adapters in fp32)
      attention   : rotated q, k, v, output (bf16) + fp32 lse        8h + 4a
      SwiGLU MLP  : gate output, silu output, up output (bf16)       6f
      int8 only   : bitsandbytes' MatMul8bitLt keeps each Linear's input: norm outputs, attention output,
                    MLP product                                      6h + 2f
    Frozen nn.Linear / 4-bit Linear keep no input (their backward needs only the weight).
    """
    llm = setup.llm
    h, f, a, r, m = llm.hidden, llm.intermediate, llm.heads, setup.lora_rank, setup.dropout_mask_bytes
    saved = 2 * (4 * h + 4) + 2 * (m * h + 4 * h + 4 * r) + 8 * h + 4 * a + 6 * f
    if mode == "int8":
        saved += 6 * h + 2 * f
    return float(saved)


def glee_bytes(counts: Counts, setup: Setup, images: int, *, training: bool, ckpt: bool) -> dict[str, float]:
    """GLEE activation bytes for ``images`` prompt-image pairs at ``glee_size`` (16-bit), reference (plain-PyTorch)
    multi-scale deformable attention kernel. Symbols: S encoder positions (strides 8..64), C width, M heads,
    Lv levels, P points, F encoder FFN, E fusion width, Q queries, Hm mask pixels (stride 4), X = 4*C*S*Lv*P (the
    fp32 sampled values the reference kernel stacks per encoder layer).

      inference peak : backbone features + 3 S*C*2 (src, pos, memory) + 2 S*C*4 (fp32 value) + 3 X
                       (per-level samples, their stack and the weighted product alive together)
      training saved : backbone features (no grad) + fusion 2 S*E*2 + S*C*2
                       + per encoder layer [X + S*(4C + 14 M*Lv*P + 4C + 2F + 16)]
                       + FPN 3 C*Hm*2 + two-stage 4 S*C*2
                       + per decoder layer [S*C*4 + 4 C*Q*Lv*P + Q*(8C + 2F_dec)] + masks (2 Q + C)*Hm*2
                       (``glee_grad=decoder``: no fusion/encoder/FPN terms, the memory S*C*2 is kept instead)
      + workspace    : 2 X (the last encoder layer's forward samples + product, or its backward gradients);
                       with checkpointing the fusion and encoder layers keep only their S*C*2 input and one layer
                       is recomputed during backward.
    """
    g = counts.glee_arch
    side = setup.glee_size
    S = sum((side // s) ** 2 for s in g["enc_strides"])
    C, M, Lv, P, F, E = g["conv_dim"], g["heads"], g["levels"], g["points"], g["enc_ffn"], g["fuse_dim"]
    Q, Hm = g["queries"], (side // g["mask_stride"]) ** 2
    X = 4.0 * C * S * Lv * P
    feats = sum(2.0 * c * (side // s) ** 2 for c, s in g["backbone"].values())
    if not training:
        peak = feats + 3 * S * C * 2 + 2 * S * C * 4 + 3 * X
        return {"glee_act": images * peak}
    enc_layer = X + S * (4 * C + 14 * M * Lv * P + 4 * C + 2 * F + 16)
    dec = g["dec_layers"] * (S * C * 4 + 4 * C * Q * Lv * P + Q * (8 * C + 2 * g["dec_ffn"])) + (2 * Q + C) * Hm * 2
    if setup.glee_grad == "encoder":
        fusion = 2 * S * E * 2 + S * C * 2
        if ckpt:
            encoder = (g["enc_layers"] + 1) * S * C * 2
            workspace = enc_layer + 2 * X
        else:
            encoder = fusion + g["enc_layers"] * enc_layer
            workspace = 2 * X
        saved = feats + encoder + 3 * C * Hm * 2 + 4 * S * C * 2 + dec
    elif setup.glee_grad == "decoder":
        saved = feats + S * C * 2 + C * Hm * 2 + dec
        workspace = 2 * 4.0 * C * Q * Lv * P
    else:
        raise ValueError(f"glee_grad must be 'encoder' or 'decoder', got {setup.glee_grad!r}")
    return {"glee_act": images * (saved + workspace)}


def computed(setup: Setup, mode: str, phase: str, counts: Counts | None = None) -> dict[str, float]:
    """Byte terms and their ``total`` for one (mode, phase): ``inference``, ``train``, ``train+ckpt``."""
    counts = counts or count_parameters(setup)
    llm = setup.llm
    h, L, V = llm.hidden, llm.layers, setup.vocab
    weights = weight_bytes(counts, mode)
    terms = {"weights": sum(weights.values())}
    dequant = 2.0 * counts.lm_linear_max if mode in ("int8", "nf4") else 0.0
    if phase == "inference":
        T = setup.infer_batch * setup.seq_len
        terms["kv_cache"] = 2.0 * 2 * L * T * h
        # residual + normed input + three intermediate-wide tensors inside the MLP; fp16 logits + last hidden state
        kept = T * (2 * V + 2 * h)                     # fp16 logits + last hidden state, still held while GLEE runs
        vision = setup.infer_batch * 25 * (setup.patches + 1) * 1024 * 2.0   # all CLIP hidden states are returned
        llm_act = T * (4 * h + 6 * llm.intermediate) + dequant + kept + vision
        glee = glee_bytes(counts, setup, setup.infer_batch, training=False, ckpt=False)["glee_act"]
        terms["llm_act"] = llm_act
        terms["glee_act"] = glee
        # the LLM's transients are gone when GLEE runs: the peak is the larger of the two (KV cache held by both)
        terms["total"] = terms["weights"] + terms["kv_cache"] + max(llm_act, kept + glee)
        return terms
    if phase not in ("train", "train+ckpt"):
        raise ValueError(f"unknown phase {phase!r}; one of {PHASES}")
    ckpt = phase == "train+ckpt"
    T = setup.batch * setup.seq_len
    # Trainable state. 16-bit trainables (embed/lm_head rows, text_hidden_fcs): bf16 weight (in weights) + bf16
    # grad + fp32 master + AdamW m, v -> 14 B beyond the weight. fp32 trainables (LoRA) and the added rows
    # (peft trainable tokens, 16-bit weight + grad + fp32 master + AdamW): 16 B.
    rows16 = counts.embed + counts.lm_head if setup.train_rows == "all" else 0
    fp32 = counts.lora + (counts.new_rows if setup.train_rows == "new" else 0)
    p16 = rows16 + counts.fcs
    terms["train_static"] = 12.0 * p16 + 12.0 * fp32   # masters / fp32 weights + AdamW m, v: alive between steps
    terms["grads"] = 2.0 * p16 + 4.0 * fp32
    terms["train_state"] = terms["train_static"] + terms["grads"]
    layer = llm_layer_saved_bytes(setup, mode) * T
    head = T * (4 * h + 4 + 2 * h)                     # final RMSNorm + lm_head input
    if setup.train_rows == "new":                      # peft's trainable tokens: lm_head runs on a merged copy of
        head += 2.0 * V * h                            # its weight, which the backward keeps
    logits_kept = T * V * (2 + 4)                      # bf16 logits (held by the output) + fp32 log-softmax
    logits_bwd = T * V * 8                             # loss backward: fp32 grad in + grad out, before casting
    workspace = layer + dequant                        # one layer's gradients + a dequantised weight
    if ckpt:
        saved = L * T * 2 * h + head
        transient = max(logits_bwd, layer + workspace)  # a recomputed layer's activations + its gradients
    else:
        saved = L * layer + head
        transient = max(logits_bwd, workspace)
    terms["llm_act"] = saved + logits_kept + transient
    terms["glee_act"] = glee_bytes(counts, setup, setup.batch, training=True, ckpt=ckpt)["glee_act"]
    step_extra = 2.0 * p16                             # optimiser step: fp32 copies of the bf16 grads
    terms["total"] = terms["weights"] + terms["train_state"] + max(terms["llm_act"] + terms["glee_act"], step_extra)
    return terms


METHOD = f"""\
Method (computed columns). GiB = 2^30 bytes. Parameters: exact, from meta-device instances of
transformers LlavaForConditionalGeneration (LLaMA decoder + CLIP ViT-L/14; LISA's one-Linear projector at 224 px,
HF's 2-layer MLP at 336 px) and gleekit's GleeModel preset; nothing is downloaded.
Weights: only the LLM decoder Linears are quantized. fp16: 2 B/param (the measured step runs this 16-bit mode in
bf16, int8's compute in fp16; the bytes are the same). int8 (bitsandbytes LLM.int8): 1 B/param +
one fp32 scale per output row. nf4 (bitsandbytes, blocksize 64, double quantization): 4 bits + an 8-bit absmax per
64 weights + an fp32 second-level absmax per 256 absmax = {NF4_BITS:.4f} bits/param (0.127 bits overhead) + a
1 KiB code table per tensor. Embeddings, lm_head, norms, CLIP, projector and GLEE stay 16-bit in every mode.
Inference (batch 1, the full 512-position prompt, as LISA's evaluate re-runs the sequence): weights + KV cache
(2 * layers * tokens * hidden * 2 B) + max(LLM forward transient, GLEE forward transient). LLM transient: tokens *
(4h + 6f) for the residual, normed input and three MLP-wide tensors, + fp16 logits and last hidden state, + CLIP
hidden states, + for int8/nf4 one dequantised weight (2 B * largest Linear). GLEE transient at 1024x1024: see
glee_bytes(); the reference deformable-attention kernel's fp32 samples (3 * 4*C*S*Lv*P) dominate.
QLoRA step (micro-batch 2 x 512 positions, bf16 activations, steady state = the optimiser states exist):
weights + trainable state (bf16 16-bit trainables: +2 grad +4 fp32 master +8 AdamW m,v = 14 B; fp32 LoRA: 16 B)
+ LLM activations + GLEE activations. LLM saved activations per token per layer (validated against autograd's
saved tensors in tests/benchmarks/test_mllm_memory.py): 2*(4h+4) RMSNorm + 2*(h + 4h + 4r) LoRA q,v + 8h + 4a
attention + 6f MLP (+ 6h + 2f for int8, whose matmul keeps its inputs). Plus final norm / head input, bf16 logits
and the fp32 log-softmax (6 B * tokens * vocab) and the largest transient: loss backward (8 B * tokens * vocab) or
one layer's gradients + a dequantised weight. --train-rows new trains the added rows through peft's trainable
tokens (gleekit's lora.new_token_rows), whose lm_head multiplies by a merged copy of its weight (2 B * vocab * h,
kept for the backward). Gradient checkpointing (HF, per decoder layer; GLEE fusion and
encoder layers wrapped likewise): each layer keeps its 2h input, one layer is recomputed during backward.
GLEE is frozen; with --glee-grad encoder the [SEG] embedding enters early fusion, so the pixel-decoder encoder
and the object decoder keep activations for the backward to the LLM (backbone under no_grad).
Fits: total + {RESERVE_GIB} GiB (CUDA context, workspaces, allocator slack) <= the card's GiB."""


# ---------------------------------------------------------------------------------------------- measurement
def measure_supported() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "--measure needs a CUDA GPU (torch.cuda.is_available() is False here)"
    try:
        import bitsandbytes  # noqa: F401
        import peft  # noqa: F401
    except ImportError as exc:
        return False, f"--measure needs peft and bitsandbytes ({exc})"
    return True, ""


class MasterAdamW:
    """AdamW on fp32 master copies of bf16 parameters (fp32 parameters are stepped in place), like DeepSpeed bf16."""

    def __init__(self, params, lr: float = 3e-4, fused: bool = False):
        import torch

        self.pairs = []
        masters = []
        for p in params:
            master = None if p.dtype == torch.float32 else p.detach().float().requires_grad_(True)
            self.pairs.append((p, master))
            masters.append(p if master is None else master)
        self.opt = torch.optim.AdamW(masters, lr=lr, betas=(0.9, 0.95), weight_decay=0.0, fused=fused)

    def step(self) -> None:
        for p, master in self.pairs:
            if master is not None and p.grad is not None:
                master.grad = p.grad.float()
                p.grad = None
        self.opt.step()
        for p, master in self.pairs:
            if master is not None:
                p.data.copy_(master.data)

    def zero_grad(self) -> None:
        for p, master in self.pairs:
            p.grad = None
            if master is not None:
                master.grad = None


def _checkpoint_glee_encoder(glee) -> None:
    from torch.utils.checkpoint import checkpoint

    encoder = glee.pixel_decoder.transformer.encoder
    for module in list(encoder.layers) + [v for v in encoder.vl_layers if hasattr(v, "b_attn")]:
        forward = module.forward
        module.forward = functools.partial(checkpoint, forward, use_reentrant=False)


def save_random_checkpoint(setup: Setup, folder: Path, device: str) -> None:
    """A random-weight LLaVA of the setup, saved with ``save_pretrained`` (bf16)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(llava_config(setup))
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(folder)
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def measure_mode(setup: Setup, mode: str, folder: Path, device: str, steps: int = 2) -> dict:
    """Peak allocated memory (bytes) of one inference forward and one steady-state training step per phase."""
    import torch
    from torch import nn
    from torch.nn import functional as F
    from transformers import LlavaForConditionalGeneration

    from adapters.lora import llm_lora_config, token_rows
    from adapters.quantization import DEFAULT_SKIP_MODULES, from_pretrained_quantized, quantization_config

    cuda = device.startswith("cuda")
    dtype = torch.float16 if mode == "int8" else torch.bfloat16   # LLM.int8 computes in fp16
    quant = quantization_config({"fp16": None, "int8": 8, "nf4": 4}[mode], dtype, skip_modules=DEFAULT_SKIP_MODULES)

    def allocated() -> int:
        return torch.cuda.memory_allocated() if cuda else 0

    def reset() -> None:
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak() -> int:
        if cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return 0

    record: dict = {"mode": mode}
    torch.manual_seed(0)
    model = from_pretrained_quantized(LlavaForConditionalGeneration, folder, quant, dtype=dtype,
                                      device_map={"": device})
    set_lisa_projector(model, setup, dtype)
    quantized = [name for name, module in model.named_modules() if type(module).__name__ in ("Linear4bit", "Linear8bitLt")]
    outside = [name for name in quantized if ".language_model." not in f".{name}."]
    if outside:
        raise RuntimeError(f"{len(outside)} Linear layers outside the LLM were quantized, e.g. {outside[0]}")
    record["quantized_linears"] = len(quantized)
    with torch.device(device):
        glee = build_glee(setup.glee_preset)
    glee = glee.to(dtype=dtype).eval().requires_grad_(False)
    if setup.glee_grad == "decoder":
        glee.config.early_fusion = False
    seg_dim = glee.config.hidden_dim
    h = setup.llm.hidden
    fcs = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, seg_dim)).to(device=device, dtype=dtype)
    model.requires_grad_(False)
    reset()
    record["weights"] = allocated()

    hidden = {}
    model.model.language_model.norm.register_forward_hook(lambda _m, _i, out: hidden.__setitem__("last", out))

    def batch_inputs(batch: int):
        s, n_img = setup.seq_len, setup.patches
        ids = torch.randint(1, BASE_VOCAB, (batch, s), device=device)
        ids[:, 1:1 + n_img] = model.config.image_token_index
        labels = ids.clone()
        labels[:, :1 + n_img] = -100
        image = VISION[setup.vision][0]
        pixels = torch.randn(batch, 3, image, image, device=device, dtype=dtype)
        glee_images = torch.randn(batch, 3, setup.glee_size, setup.glee_size, device=device, dtype=dtype)
        return ids, labels, pixels, glee_images

    # ---------------- inference: prompt forward with KV cache, then GLEE on the [SEG] state
    model.eval()
    ids, _, pixels, glee_images = batch_inputs(setup.infer_batch)
    reset()
    base = allocated()
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, use_cache=True)
        record["infer_llm"] = peak() - base
        seg = fcs(hidden["last"][:, -3]).unsqueeze(1)
        mid = allocated()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        masks = glee(glee_images, expression_embeds=seg).pred_masks
        record["infer_glee"] = peak() - mid
        record["infer_kv_logits"] = mid - base
    del out, masks, seg
    hidden.clear()
    record["inference"] = base + max(record["infer_llm"], record["infer_kv_logits"] + record["infer_glee"])

    # ---------------- training: LoRA q/v + LISA's trainable set (or the added rows: gleekit's new_token_rows)
    from peft import get_peft_model

    model.gradient_checkpointing_disable()
    rows = token_rows(model, range(BASE_VOCAB, setup.vocab)) if setup.train_rows == "new" else None
    model = get_peft_model(model, llm_lora_config(setup.lora_rank, 16, 0.05, trainable_token_indices=rows))
    if setup.train_rows == "all":  # LISA unfreezes the 16-bit matrices themselves (no modules_to_save copies)
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            module.weight.requires_grad_(True)
    fcs.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad] + list(fcs.parameters())
    record["trainable_params"] = sum(p.numel() for p in params)
    optimizer = MasterAdamW(params, fused=cuda)
    model.train()
    glee_ckpt_done = False
    ids, labels, pixels, glee_images = batch_inputs(setup.batch)
    target = (torch.rand(setup.batch, setup.glee_size // 4, setup.glee_size // 4, device=device) > 0.5).float()

    def step() -> None:
        out = model(input_ids=ids, pixel_values=pixels, labels=labels, use_cache=False)
        seg = fcs(hidden["last"][:, -3]).unsqueeze(1)
        with torch.no_grad():
            features = glee.encode_image(glee_images)
        mask = glee(glee_images, expression_embeds=seg, image_features=features).pred_masks[:, 0].float()
        prob = mask.sigmoid()
        dice = 1 - (2 * (prob * target).sum((-1, -2)) + 1) / (prob.sum((-1, -2)) + target.sum((-1, -2)) + 1)
        loss = out.loss + 2.0 * F.binary_cross_entropy_with_logits(mask, target) + 0.5 * dice.mean()
        del out, mask, prob, dice, seg, features
        hidden.clear()
        loss.backward()
        del loss
        optimizer.step()
        optimizer.zero_grad()

    for phase in ("train", "train+ckpt"):
        if phase == "train+ckpt":
            model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if setup.glee_grad == "encoder" and not glee_ckpt_done:
                _checkpoint_glee_encoder(glee)
                glee_ckpt_done = True
        for i in range(steps):
            reset()
            record[f"{phase}_static"] = allocated()
            start = time.perf_counter()
            step()
            record[f"{phase}_seconds"] = time.perf_counter() - start
        record[phase] = peak()
    return record


def run_measurement(setup: Setup, modes: list[str], device: str = "cuda") -> dict[str, dict]:
    """One child process per mode (clean peaks), all loading one random checkpoint saved here."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mllm_memory_") as tmp:
        folder = Path(tmp) / "llava-random"
        start = time.perf_counter()
        save_random_checkpoint(setup, folder, device)
        print(f"random checkpoint saved in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        for mode in modes:
            start = time.perf_counter()
            command = [sys.executable, __file__, "--child", mode, "--child-folder", str(folder),
                       "--child-device", device, "--setup-json", json.dumps(dataclasses.asdict(setup))]
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"[{mode}] measurement failed:\n{proc.stderr[-4000:]}", file=sys.stderr, flush=True)
                results[mode] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
                continue
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"[{mode}] measured in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return results


# ---------------------------------------------------------------------------------------------- report
def gib(x: float) -> str:
    return f"{x / GIB:.2f}"


def fits(total: float, budget_gib: float) -> bool:
    return total / GIB + RESERVE_GIB <= budget_gib


def print_report(setup: Setup, budget_gib: float, measured: dict[str, dict] | None) -> dict:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    counts = count_parameters(setup)
    params = Table(title=f"parameters (exact, meta device): {setup.label()}")
    for column in ("part", "params", "fp16 GiB", "int8 GiB", "nf4 GiB", "note"):
        params.add_column(column, justify="left" if column in ("part", "note") else "right")
    per_mode = {m: weight_bytes(counts, m) for m in MODES}
    rows = [
        ("LLM decoder Linears", counts.lm_linear, "lm_linear", "quantized"),
        ("embed_tokens + lm_head + norms", counts.kept16, "lm_16bit", f"16-bit; vocab {setup.vocab}"),
        ("CLIP ViT-L/14 vision tower", counts.vision, "vision", "16-bit, frozen"),
        ("mm projector", counts.projector, "projector", VISION[setup.vision][2]),
        (f"GLEE {setup.glee_preset}", counts.glee, "glee",
         f"16-bit, frozen; CLIP text towers {counts.glee_text / 1e6:.1f}M of it"),
        ("text_hidden_fcs", counts.fcs, "fcs", "trainable"),
    ]
    for name, n, key, note in rows:
        params.add_row(name, f"{n:,}", *(gib(per_mode[m][key]) for m in MODES), note)
    params.add_row("LLM total (incl. embeddings)", f"{counts.lm_total:,}", "", "", "", "")
    params.add_row("LoRA r=%d q_proj,v_proj" % setup.lora_rank, f"{counts.lora:,}", "", "", "", "fp32, trainable")
    console.print(params)

    table = Table(title=f"memory per phase (GiB; fits = total + {RESERVE_GIB} GiB reserve <= {budget_gib:g} GiB)")
    columns = ["mode", "phase", "weights", "KV / train state", "LLM act", "GLEE act", "total", f"fits {budget_gib:g}"]
    if measured:
        columns += ["measured", "meas./comp."]
    for column in columns:
        table.add_column(column, justify="left" if column in ("mode", "phase") else "right")
    report = {"setup": dataclasses.asdict(setup), "seq_len": setup.seq_len, "counts": dataclasses.asdict(counts),
              "computed": {}, "measured": measured or {}}
    for mode in MODES:
        for phase in PHASES:
            terms = computed(setup, mode, phase, counts)
            report["computed"][f"{mode}/{phase}"] = terms
            state = terms.get("kv_cache", terms.get("train_state", 0.0))
            row = [mode, phase, gib(terms["weights"]), gib(state), gib(terms["llm_act"]), gib(terms["glee_act"]),
                   gib(terms["total"]), "yes" if fits(terms["total"], budget_gib) else "NO"]
            if measured:
                got = (measured.get(mode) or {}).get(phase)
                row += [gib(got), f"{got / terms['total']:.2f}"] if got else ["-", "-"]
            table.add_row(*row)
        table.add_section()
    console.print(table)
    if measured:
        detail = Table(title="measured detail (GiB unless named; computed in brackets). train static: allocated at "
                             "the start of a steady-state step (weights, LoRA, fp32 masters, AdamW states)")
        for column in ("mode", "weights", "trainable params", "train static", "LLM fwd (infer)", "GLEE fwd (infer)",
                       "step s", "ckpt step s"):
            detail.add_column(column, justify="left" if column == "mode" else "right")
        trainable = (counts.lora + counts.fcs + (counts.embed + counts.lm_head if setup.train_rows == "all"
                                                 else counts.new_rows))
        for mode in MODES:
            got = measured.get(mode)
            if not got:
                continue
            if "error" in got:
                detail.add_row(mode, f"error: {got['error'][:90]}", *[""] * 6)
                continue
            train = computed(setup, mode, "train", counts)
            infer = computed(setup, mode, "inference", counts)
            detail.add_row(
                mode, f"{gib(got['weights'])} [{gib(train['weights'])}]",
                f"{got['trainable_params']:,} [{trainable:,}]",
                f"{gib(got['train_static'])} [{gib(train['weights'] + train['train_static'])}]",
                f"{gib(got['infer_llm'])} [{gib(infer['kv_cache'] + infer['llm_act'])}]",
                f"{gib(got['infer_glee'])} [{gib(infer['glee_act'])}]",
                f"{got['train_seconds']:.2f}", f"{got['train+ckpt_seconds']:.2f}")
        console.print(detail)
    console.print(METHOD, highlight=False)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="7b", help="LLM size (computed and measured)")
    parser.add_argument("--layers", type=int, help="override the LLM depth (e.g. 8: 7B width, quick GPU check)")
    parser.add_argument("--vision", type=int, choices=sorted(VISION), default=224, help="CLIP input size")
    parser.add_argument("--seq-len", type=int, help="LLM positions incl. image patches (default: 257 text + patches - 1)")
    parser.add_argument("--batch", type=int, default=2, help="training micro-batch (sequences)")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--train-rows", choices=["all", "new"], default="all",
                        help="embed_tokens/lm_head: all rows (LISA) or only the added tokens' rows")
    parser.add_argument("--glee-preset", default="lite-r50")
    parser.add_argument("--glee-size", type=int, default=1024)
    parser.add_argument("--glee-grad", choices=["encoder", "decoder"], default="encoder")
    parser.add_argument("--budget-gib", type=float, default=24.0, help="card size for the 'fits' column")
    parser.add_argument("--measure", action="store_true", help="also measure on the GPU (CUDA only)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to measure")
    parser.add_argument("--json", type=Path, help="write computed (and measured) figures here")
    parser.add_argument("--measure-device", default="cuda", help=argparse.SUPPRESS)  # 'cpu': code-path dry run
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--child-folder", help=argparse.SUPPRESS)
    parser.add_argument("--child-device", help=argparse.SUPPRESS)
    parser.add_argument("--setup-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        setup = Setup(**json.loads(args.setup_json))
        print(json.dumps(measure_mode(setup, args.child, Path(args.child_folder), args.child_device)))
        return

    setup = Setup(scale=args.scale, layers=args.layers, vision=args.vision, batch=args.batch,
                  lora_rank=args.lora_rank, train_rows=args.train_rows, glee_preset=args.glee_preset,
                  glee_size=args.glee_size, glee_grad=args.glee_grad)
    if args.seq_len is not None:
        if args.seq_len < setup.patches + 1:
            parser.error(f"--seq-len must exceed the {setup.patches} image positions")
        setup = dataclasses.replace(setup, text_tokens=args.seq_len - setup.patches + 1)

    measured = None
    if args.measure:
        ok, why = (True, "") if args.measure_device == "cpu" else measure_supported()
        if ok:
            measured = run_measurement(setup, args.modes, args.measure_device)
        else:
            print(f"{why}: showing the computed table only.\n", flush=True)
    report = print_report(setup, args.budget_gib, measured)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

"""Turn :class:`~train.glee.samples.TrainSample` groups into model inputs and loss targets.

Images are resized with the model's test-time rule (:func:`glee_core.processing.resize_image`), normalised and
padded; targets are boxes cxcywh normalised by the padded size (the frame the model predicts in), masks bool at the
padded size, and, for visual prompts, prompt masks built by the same functions the predictor uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from glee_core import processing
from glee_core.modeling.visual_prompt import prompt_mask_from_box, prompt_mask_from_point
from train.glee.matcher import Target
from train.glee.samples import TrainSample


@dataclass
class GleeBatch:
    """One forward's worth of samples of the same task.

    ``images`` [B, 3, Hp, Wp]; ``targets`` per image; ``names``: the K category names (detection), B expressions
    (referring) or ``["object"]`` (visual); ``prompt_masks`` [B, Hp, Wp] bool for visual prompts.
    """

    task: str
    images: torch.Tensor
    targets: list[Target]
    names: list[str]
    prompt_type: str | None = None
    prompt_masks: torch.Tensor | None = None

    def model_kwargs(self) -> dict:
        """Keyword arguments of :meth:`GleeModel.forward` for this batch (besides the images)."""
        if self.task == "detection":
            return {"categories": self.names}
        if self.task == "referring":
            return {"expressions": self.names}
        return {"categories": ["object"], "visual_prompt_masks": self.prompt_masks,
                "visual_prompt_type": self.prompt_type}

    def to(self, device: torch.device | str) -> "GleeBatch":
        targets = [Target(t.labels.to(device), t.boxes.to(device), None if t.masks is None else t.masks.to(device))
                   for t in self.targets]
        masks = None if self.prompt_masks is None else self.prompt_masks.to(device)
        return GleeBatch(self.task, self.images.to(device), targets, self.names, self.prompt_type, masks)


def _resize_masks(masks: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(masks)).float()
    if tuple(t.shape[-2:]) == size or t.shape[0] == 0:
        return t.reshape(t.shape[0], *size) > 0.5 if t.shape[0] == 0 else t > 0.5
    return F.interpolate(t[None], size=size, mode="bilinear", align_corners=False)[0] > 0.5


def collate(samples: list[TrainSample], spec: processing.InputSpec) -> GleeBatch:
    """Samples of one group (same ``sample.group``) -> a :class:`GleeBatch`."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    groups = {s.group for s in samples}
    if len(groups) != 1:
        raise ValueError(f"collate takes samples of one task/prompt type, got {sorted(groups, key=str)}")
    task, prompt_type = samples[0].group
    if task == "detection" and any(s.names != samples[0].names for s in samples):
        raise ValueError("detection samples of one batch must prompt the same category list")
    resized = [processing.resize_image(s.image, spec) for s in samples]
    sizes = [r.shape[:2] for r in resized]
    images = processing.normalize_and_pad(
        [torch.from_numpy(np.ascontiguousarray(r.transpose(2, 0, 1))) for r in resized], spec)
    padded = tuple(images.shape[-2:])
    targets, prompt_masks = [], []
    for sample, (h, w) in zip(samples, sizes):
        h0, w0 = sample.image.shape[:2]
        scale = np.array([w / w0, h / h0, w / w0, h / h0], dtype=np.float32)
        xyxy = torch.from_numpy(sample.boxes * scale)
        cxcywh = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                              xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], dim=1)
        boxes = cxcywh / torch.tensor([padded[1], padded[0], padded[1], padded[0]], dtype=torch.float32)
        masks = None
        if sample.masks is not None:
            masks = torch.zeros(len(sample.labels), *padded, dtype=torch.bool)
            masks[:, :h, :w] = _resize_masks(sample.masks, (h, w))
        targets.append(Target(torch.from_numpy(sample.labels), boxes.clamp(0, 1), masks))
        if task == "visual":
            prompt = sample.prompt * scale[: len(sample.prompt)]
            if prompt_type == "box":
                prompt_masks.append(prompt_mask_from_box(prompt.tolist(), (h, w), padded))
            else:
                point = [min(prompt[0], w - 1), min(prompt[1], h - 1)]
                prompt_masks.append(prompt_mask_from_point(point, (h, w), padded))
    names = samples[0].names if task != "referring" else [s.names[0] for s in samples]
    return GleeBatch(task, images, targets, names, prompt_type, torch.cat(prompt_masks) if prompt_masks else None)

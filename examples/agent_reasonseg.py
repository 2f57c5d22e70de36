"""Reasoning segmentation with a real LLM: a vision chat model behind any OpenAI-compatible endpoint plans short
phrases, segments them with GLEE, looks at the numbered overlays and selects the objects that answer a question.

The model must read images and call tools. Configure the endpoint with environment variables::

    # OpenAI
    export OPENAI_API_KEY=sk-... GLEEKIT_AGENT_MODEL=gpt-4o-mini
    # a local vLLM server (Qwen2.5 models call tools through vLLM's hermes parser)
    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --enable-auto-tool-choice --tool-call-parser hermes
    export OPENAI_BASE_URL=http://localhost:8000/v1 GLEEKIT_AGENT_MODEL=Qwen/Qwen2.5-VL-7B-Instruct
    # Ollama: OPENAI_BASE_URL=http://localhost:11434/v1 and a model with the vision and tools capabilities

Run: ``python examples/agent_reasonseg.py [IMAGE] "QUESTION" [--out mask.png]`` (without IMAGE: a held-out
shapeworld scene). It prints every tool call and how the loop ended, and writes the mask when asked.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from agents.core import GleeToolkit
from agents.openai_chat import OpenAICompatibleChat
from agents.reasoning import ReasoningResult, reason_segment


def load(image: str | None) -> np.ndarray:
    """The image's uint8 [H, W, 3] RGB pixels, or a held-out shapeworld scene's."""
    if image is not None:
        from glee_core.image_io import load_image

        return load_image(image)
    from train.data.shapeworld import generate_scene, scene_seed

    return generate_scene(scene_seed("test", 3), split="test").image


def main(argv: list[str] | None = None) -> ReasoningResult:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", nargs="?", help="Image file (default: a shapeworld scene).")
    parser.add_argument("question")
    parser.add_argument("--model", default=os.environ.get("GLEEKIT_AGENT_MODEL", "gpt-4o-mini"),
                        help="Chat model name (default: $GLEEKIT_AGENT_MODEL or gpt-4o-mini).")
    parser.add_argument("--glee", default="nano", help="GLEE model folder or bundled name.")
    parser.add_argument("--max-steps", type=int, default=6, help="Model replies allowed.")
    parser.add_argument("--out", help="Write the mask here as a PNG.")
    args = parser.parse_args(argv)

    chat = OpenAICompatibleChat(model=args.model)  # base URL and key from OPENAI_BASE_URL / OPENAI_API_KEY
    toolkit = GleeToolkit(model=args.glee)
    try:
        result = reason_segment(chat, toolkit, load(args.image), args.question, max_steps=args.max_steps)
    finally:
        toolkit.close()
    for name, arguments, ok in result.tool_calls:
        print(f"{'ok ' if ok else 'err'} {name} {arguments}")
    print(f"{result.stopped}: {result.answer} {result.objects} ({int(result.mask.sum())} mask pixels)")
    if args.out:
        from PIL import Image

        Image.fromarray(result.mask.astype(np.uint8) * 255).save(args.out)
    return result


if __name__ == "__main__":
    main()

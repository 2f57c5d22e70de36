"""GLEE-LLM: a Hugging Face VLM with GLEE in place of SAM (LISA-style ``[SEG]`` masks, All-Seeing-style object tokens).

Import from the submodules: ``mllm.modeling.GleeLLM``, ``mllm.config.GleeLLMConfig``, ``mllm.io.load_gleellm``
(or ``import gleekit``).
"""

DEFAULT_MODEL = "shapeworld-tiny"
"""The GLEE-LLM shipped inside the package (``mllm/weights/``; trained on shapeworld, see its MODEL_CARD.md)."""

"""gleekit adapters: projectors, freeze policies, LoRA, quantization, prompt tuning and merged export."""
from adapters.apply import apply_adapter
from adapters.export import export_merged
from adapters.freeze import GleePolicy, freeze, trainable_summary, unfreeze_matching
from adapters.lora import GLEE_LORA_TARGETS, GLEE_SELF_ATTN_TARGETS, LLM_LORA_TARGETS, apply_lora, glee_lora_config, llm_lora_config, merge_lora
from adapters.projectors import ObjectProjector, SegProjector
from adapters.prompt_tuning import prompt_tuning_config
from adapters.quantization import DEFAULT_SKIP_MODULES, load_quantized, prepare_for_kbit_lora, quantization_config

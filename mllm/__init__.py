"""gleekit: mllm (see its issue; not implemented yet)."""

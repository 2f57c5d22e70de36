"""gleekit: eval (see its issue; not implemented yet)."""

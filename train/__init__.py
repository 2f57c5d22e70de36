"""gleekit: train (see its issue; not implemented yet)."""

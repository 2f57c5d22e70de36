"""gleekit: agents (see its issue; not implemented yet)."""

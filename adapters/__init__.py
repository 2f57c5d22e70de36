"""gleekit: adapters (see its issue; not implemented yet)."""

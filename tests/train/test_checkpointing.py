"""Atomic checkpoint folders: a save killed at any point leaves a complete checkpoint to resume from."""
from __future__ import annotations

import pytest
import torch

from train.checkpointing import STATE_NAME, load_trainer_state, recover_interrupted, save_atomically


def write_step(step: int):
    return lambda tmp: torch.save({"step": step}, tmp / STATE_NAME)


def test_save_replaces_the_previous_checkpoint_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "checkpoint-last"
    save_atomically(target, write_step(1))
    save_atomically(target, write_step(2))
    assert load_trainer_state(target) == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-last"]


def test_a_save_killed_between_its_renames_is_recovered(tmp_path):
    target = tmp_path / "checkpoint-last"
    save_atomically(target, write_step(1))
    target.rename(tmp_path / "checkpoint-last.old")  # killed here: the new folder never arrived
    recover_interrupted(target)
    assert load_trainer_state(target) == {"step": 1}
    target.rename(tmp_path / "checkpoint-last.old")
    save_atomically(target, write_step(2))  # the next save keeps nothing stale either
    assert load_trainer_state(target) == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-last"]


def test_a_save_killed_while_writing_keeps_the_previous_one(tmp_path):
    target = tmp_path / "checkpoint-last"
    save_atomically(target, write_step(1))

    def crash(tmp):
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_atomically(target, crash)
    assert load_trainer_state(target) == {"step": 1}
    with pytest.raises(FileNotFoundError, match=r"checkpoint-last.tmp is not a complete checkpoint"):
        load_trainer_state(tmp_path / "checkpoint-last.tmp")

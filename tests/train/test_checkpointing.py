"""Atomic checkpoint folders: a save killed at any point leaves a complete checkpoint to resume from; a resume
under other settings is refused."""
from __future__ import annotations

import json

import pytest
import torch

from train.checkpointing import STATE_NAME, check_same_run, load_trainer_state, recover_interrupted, save_atomically


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


def test_resuming_under_other_settings_is_refused_but_length_and_logging_may_change():
    saved = json.dumps({"optim": {"lr": 1e-4, "betas": [0.9, 0.99]}, "steps": 100, "log_every": 10})
    check_same_run("run/checkpoint-last", saved, {"optim": {"lr": 1e-4, "betas": (0.9, 0.99)}, "steps": 200,
                                                  "log_every": 1}, free=("steps", "log_every"))
    with pytest.raises(ValueError, match=r"checkpoint-last was saved by a run with other settings \(optim.lr "
                                         r"0.0001 -> 0.001\): resume with its config"):
        check_same_run("run/checkpoint-last", saved, {"optim": {"lr": 1e-3, "betas": (0.9, 0.99)}, "steps": 100,
                                                      "log_every": 10}, free=("steps",))

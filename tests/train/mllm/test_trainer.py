"""`gleekit train mllm` end to end (subprocesses, as users run it): one CPU process with DeepSpeed ZeRO-2,
two processes through `accelerate launch` matching one with doubled accumulation, ZeRO-3 (frozen GLEE kept out of
the partitioning) following ZeRO-2, and a run killed with
SIGKILL that resumes on the same loss curve."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from train.mllm.trainer import checkpoints

GLEEKIT = shutil.which("gleekit") or str(Path(sys.executable).with_name("gleekit"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def write_config(tmp_path: Path, **overrides) -> Path:
    config = {"model": {"num_objects": 2, "tiny": {"image_size": 32, "hidden": 32, "layers": 1, "heads": 2,
                                                    "vocab_samples": 8}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
              "data": {"scenes": 8}, "optim": {"lr": 3e-3, "warmup_steps": 1}, "steps": 3, "batch_size": 2,
              "grad_accum": 1, "deepspeed": "zero2", "precision": "fp32", "output_dir": str(tmp_path / "run"),
              "save_every": 2, "keep_last": 1, **overrides}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def one_process(config: Path) -> list[str]:
    return [GLEEKIT, "train", "mllm", "--config", str(config)]


def two_processes(config: Path) -> list[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--use_deepspeed", "--num_processes", "2",
            "--main_process_port", str(port), GLEEKIT, "train", "mllm", "--config", str(config)]


def run(command: list[str], timeout: float = 300) -> None:
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}


def test_one_process_zero2_trains_validates_checkpoints_and_exports(tmp_path):
    from mllm.io import load_gleellm

    run(one_process(write_config(tmp_path, validation={"every": 2, "samples": 2})))
    out = tmp_path / "run"
    validation = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [(v["step"], v["queries"]) for v in validation] == [(2, 2)]
    assert 0 <= validation[0]["overall gIoU"] <= 1 and 0 <= validation[0]["overall cIoU"] <= 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    assert {"ce", "mask_bce", "mask_dice", "select", "pointer", "lr"} <= set(rows[0])
    assert (out / "loss_curve.png").stat().st_size > 0
    assert [p.name for p in checkpoints(out)] == ["checkpoint-00000003"]  # keep_last 1
    assert not list(checkpoints(out)[0].glob("custom_checkpoint_*"))  # nothing that loads only with pickle
    assert load_gleellm(out / "model").processor.tokenizer.pad_token == "[PAD]"


def test_tensorboard_receives_the_losses(tmp_path):
    pytest.importorskip("tensorboard")
    run(one_process(write_config(tmp_path, steps=2, export=False, report_to=["tensorboard"])))
    assert list((tmp_path / "run" / "gleekit-mllm").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_two_processes_match_one_with_double_accumulation(tmp_path):
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    run(one_process(write_config(tmp_path / "one", grad_accum=2, export=False)))
    run(two_processes(write_config(tmp_path / "two", grad_accum=1, export=False)))
    one, two = losses(tmp_path / "one" / "run"), losses(tmp_path / "two" / "run")
    assert one.keys() == two.keys() == {1, 2, 3}
    np.testing.assert_allclose([two[s] for s in one], list(one.values()), rtol=1e-3, atol=1e-4)


def test_new_token_rows_train_under_zero2_and_export(tmp_path):
    from mllm.io import load_gleellm

    model = {"num_objects": 2, "tiny": {"image_size": 32, "hidden": 32, "layers": 1, "heads": 2, "vocab_samples": 8},
             "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "new_token_rows": True, "modules_to_save": []}}
    run(one_process(write_config(tmp_path, model=model, steps=2)))
    assert list(losses(tmp_path / "run")) == [1, 2]
    assert load_gleellm(tmp_path / "run" / "model").load_report.ok


def test_zero3_trains_with_glee_kept_whole_and_exports(tmp_path):
    from mllm.io import load_gleellm

    run(one_process(write_config(tmp_path, deepspeed="zero3", steps=2)))
    assert list(losses(tmp_path / "run")) == [1, 2]
    assert load_gleellm(tmp_path / "run" / "model").load_report.ok


@pytest.mark.slow
def test_zero3_follows_the_zero2_loss_curve(tmp_path):
    """From the same saved weights (a random tiny model initialises differently inside ZeRO-3's partitioned
    construction), without LoRA (its random A matrices would differ too): the projectors train identically."""
    for name in ("init", "z2", "z3"):
        (tmp_path / name).mkdir()
    run(one_process(write_config(tmp_path / "init", steps=1)))
    init = {"init": str(tmp_path / "init" / "run" / "model"), "lora": {"enabled": False}}
    run(one_process(write_config(tmp_path / "z2", export=False, model=init)))
    run(one_process(write_config(tmp_path / "z3", deepspeed="zero3", export=False, model=init)))
    z2, z3 = losses(tmp_path / "z2" / "run"), losses(tmp_path / "z3" / "run")
    np.testing.assert_allclose(list(z3.values()), list(z2.values()), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_loss_curve(tmp_path):
    steps, every = 8, 2
    (tmp_path / "full").mkdir(), (tmp_path / "cut").mkdir()
    run(one_process(write_config(tmp_path / "full", steps=steps, save_every=every, export=False)))
    full = losses(tmp_path / "full" / "run")
    config = write_config(tmp_path / "cut", steps=steps, save_every=every, export=False)
    out = tmp_path / "cut" / "run"
    process = subprocess.Popen(one_process(config), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "metrics.jsonl").is_file() or len(losses(out)) < 5:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "the run made no 5 steps in 240 s"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(losses(out))
    resumed_from = int(checkpoints(out)[-1].name.split("-")[1])
    assert killed_at - resumed_from <= every  # at most one save interval lost
    assert resumed_from < steps, "killed after the last save: nothing left to resume"
    run(one_process(config))
    resumed = losses(out)
    assert sorted(resumed) == list(range(1, steps + 1))
    np.testing.assert_allclose([resumed[s] for s in range(resumed_from + 1, steps + 1)],
                               [full[s] for s in range(resumed_from + 1, steps + 1)], rtol=1e-4, atol=1e-5)

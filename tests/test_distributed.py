"""Data-parallel training through torchrun: two CPU ranks over gloo, the same engine as one process.

The runs are launched the way a user would (`python -m torch.distributed.run --standalone
--nproc-per-node 2 -m workbench train ...`), each with a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.training.distributed import World, peer_failure, peer_sentence
from workbench.launch import check_gpus, torchrun_args

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")
SENTENCE = "another process of this 2-process job stopped answering"
# 1-rank vs 2-rank test accuracy on shapes (basic_cnn, 16 px, 2 epochs, batch 128, no augmentation):
# measured differences +0.85, -0.75, +1.05 points (seeds 0-2, 2,000 test images), while seeds alone
# moved the 1-rank result by 1.6 points. The runs differ only in which images share a batch (each
# rank shuffles its own shard), so they agree to run-to-run noise, not to the bit.
TOLERANCE = 0.04


def train_args(data_dir, runs_dir, *more) -> list[str]:
    return ["--dataset", "shapes", "--arch", "basic_cnn", "--batch-size", "128", "--device", "cpu",
            "--image-size", "16", "--augment", "none", "--data-dir", str(data_dir), "--runs-dir", str(runs_dir),
            "--seed", "0", *more]


def torchrun(*args, restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--max-restarts", str(restarts), "-m", "workbench", "train", *args]


def environment() -> dict[str, str]:
    repo = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": repo, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "WORKBENCH_DIST_TIMEOUT_S": "60"}


def start(command, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env=environment(), stdout=open(tmp_path / "out.txt", "w"),
                            stderr=open(tmp_path / "err.txt", "w"))


def rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the worker torchrun started for `rank` (read from each child's environment)."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    for pid in children:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no worker for rank {rank} among {children}")


def wait_for(path_glob, runs_dir: Path, launcher: subprocess.Popen, limit_s: float = 120) -> Path:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        found = list(runs_dir.glob(path_glob))
        if found:
            return found[0]
        assert launcher.poll() is None, "the job ended before it wrote a checkpoint"
        time.sleep(0.1)
    raise AssertionError(f"no {path_glob} after {limit_s} s")


def run_folders(runs_dir: Path) -> list[Path]:
    return [path for path in runs_dir.iterdir() if path.is_dir()] if runs_dir.exists() else []


def epoch_rows(run_dir: Path) -> list[dict]:
    from workbench.core import runs

    # Every epoch row as written, repeats included; a line rank 0 is still writing is left out.
    return [row for row in runs.read_metrics(run_dir) if row.get("type") == "epoch"]


# ---- without processes: the arithmetic of sharing -----------------------------------------------


def test_training_shards_are_disjoint_equal_and_mixed_and_every_held_out_image_is_evaluated_once():
    ranks = [World(rank, 3) for rank in range(3)]
    shards = [world.train_shard(1001, seed=5) for world in ranks]
    assert {len(shard) for shard in shards} == {333}  # equal: every rank takes as many steps
    together = torch.cat(shards)
    assert len(set(together.tolist())) == 999  # disjoint; 1001 % 3 images sit out
    assert not torch.equal(shards[0], torch.arange(0, 999, 3))  # a seeded draw, not a stride
    held_out = torch.cat([world.eval_shard(1001) for world in ranks])
    assert sorted(held_out.tolist()) == list(range(1001))
    assert World().train_shard(1001, seed=5) is None and World().eval_shard(10) is None


def test_every_rank_draws_the_same_shuffle_which_changes_each_epoch():
    cpu = torch.device("cpu")
    first = World(0, 2).epoch_order(500, seed=3, epoch=1, device=cpu)
    assert torch.equal(first, World(1, 2).epoch_order(500, seed=3, epoch=1, device=cpu))
    assert not torch.equal(first, World(0, 2).epoch_order(500, seed=3, epoch=2, device=cpu))
    assert not torch.equal(first, World(0, 2).epoch_order(500, seed=4, epoch=1, device=cpu))


def test_the_global_batch_must_split_evenly_over_the_ranks():
    assert World(0, 4).check_batch(128) == 32
    with pytest.raises(ConfigError, match="global batch and must split evenly over 4 processes"):
        World(0, 4).check_batch(130)


def test_the_world_comes_from_torchruns_environment():
    world = World.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TORCHELASTIC_RESTART_COUNT": "3",
                            "TORCHELASTIC_RUN_ID": "job-7"})
    assert (world.rank, world.size, world.local_rank, world.restart, world.job) == (1, 2, 1, 3, "job-7")
    assert world.distributed and not world.is_main
    assert not World.from_env({}).distributed
    with pytest.raises(WorkbenchError, match="whole numbers"):
        World.from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_a_collective_that_lost_its_peer_reads_as_a_sentence(tmp_path, monkeypatch):
    error = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:8069: "
                         "Connection reset by peer. This is typically caused by a remote worker hanging")
    assert peer_failure(error) and not peer_failure(ValueError("bad"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "r1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "checkpoints" / "last.pt").write_bytes(b"saved")  # resume needs one
    sentence = peer_sentence(error, World(0, 2), Path("runs/r1"))
    assert sentence == ("rank 0: another process of this 2-process job stopped answering (Read error "
                        "[127.0.0.1]:8069: Connection reset by peer); the run's last checkpoint is in runs/r1: "
                        "resume it with `workbench train --resume runs/r1`")


def test_gpus_launches_through_torch_distributed_run_and_is_refused_where_there_are_none(tmp_path, capsys):
    assert torchrun_args(4, ["--arch", "linear", "--gpus", "4", "--epochs", "2"]) == [
        "--standalone", "--nproc-per-node", "4", "-m", "workbench", "train", "--arch", "linear", "--epochs", "2"]
    assert torchrun_args(2, ["--gpus=2"])[-1] == "train"
    from torch.distributed.run import parse_args

    parsed = parse_args(torchrun_args(2, ["--epochs", "1"]))  # torchrun itself accepts what we hand it
    assert parsed.nproc_per_node == "2" and parsed.module and parsed.training_script == "workbench"
    with pytest.raises(WorkbenchError, match="--gpus 2: no CUDA GPU is visible here"):
        check_gpus(2, "auto", visible=0)
    with pytest.raises(WorkbenchError, match="only 1 CUDA GPU visible"):
        check_gpus(2, None, visible=1)
    check_gpus(2, "cuda", visible=2)

    from workbench.cli import main

    runs_dir = tmp_path / "runs"
    assert main(["train", "--gpus", "2", "--device", "cpu", "--runs-dir", str(runs_dir)]) == 2
    assert "--gpus trains on CUDA GPUs, not --device cpu" in capsys.readouterr().err
    assert not runs_dir.exists()


def test_help_says_the_batch_size_is_global(capsys):
    from workbench.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "the global batch" in " ".join(capsys.readouterr().out.split())


# ---- two ranks over gloo ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_rank_run(data_dir, tmp_path_factory):
    """One 2-rank run, shared by the tests that read it."""
    folder = tmp_path_factory.mktemp("ddp")
    runs_dir = folder / "runs"
    done = subprocess.run(torchrun(*train_args(data_dir, runs_dir, "--epochs", "2")), env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return runs_dir, done


@needs_gloo
def test_a_two_rank_run_writes_one_run_folder_and_matches_one_rank(two_rank_run, tiny, recorder):
    runs_dir, done = two_rank_run
    folders = run_folders(runs_dir)
    assert len(folders) == 1
    run_dir = folders[0]
    assert (run_dir / "status").read_text().startswith("finished")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["world_size"] == 2 and info["batch_size"] == 128
    assert done.stdout.count("finished after 2 epochs") == 1  # rank 0 reports; rank 1 is quiet
    assert "global batch 128 = 2 x 64" in done.stdout
    rows = epoch_rows(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2]

    from workbench.core.events import Finished
    from workbench.core.training.engine import fit

    one_rank = tiny(arch="basic_cnn", epochs=2, batch_size=128, image_size=16, augment="none", seed=0,
                    runs_dir=str(runs_dir.parent / "one"))
    fit(one_rank, recorder)
    alone, together = recorder.last(Finished).final_test_acc, rows[-1]["test_acc"]
    assert abs(alone - together) <= TOLERANCE, (alone, together)


@needs_gloo
def test_two_rank_evaluation_is_exact_over_the_whole_split(two_rank_run, tiny):
    """The reduced validation figures are those of the saved model on every validation image."""
    from workbench.core.data.load import load_dataset
    from workbench.core.metrics import class_reports
    from workbench.core.models import create
    from workbench.core.training.batches import DeviceBatches
    from workbench.core.training.loop import evaluate

    runs_dir, _ = two_rank_run
    run_dir = run_folders(runs_dir)[0]
    row = epoch_rows(run_dir)[-1]
    config = tiny(image_size=16)
    data = load_dataset("shapes", data_dir=config.resolved_data_dir(), image_size=16, seed=0,
                        val_fraction=config.val_fraction)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in state["model"])  # the unwrapped model
    model = create("basic_cnn", data.channels, data.num_classes, 16)
    model.load_state_dict(state["model"])
    batches = DeviceBatches(data.val.images, data.val.labels, data.mean, data.std, torch.device("cpu"), 256,
                            shuffle=False)
    alone = evaluate(model, batches, data.num_classes, split="val")
    assert int(alone.confusion.sum()) == len(data.val)
    assert abs(row["val_acc"] - alone.acc) <= 1 / len(data.val)  # at most one near-tie may flip
    recall = {r.name: r.recall for r in class_reports(alone.confusion, data.classes)}
    assert set(row["per_class_acc"]) == set(recall)
    assert all(abs(row["per_class_acc"][name] - recall[name]) <= 0.02 for name in recall)


@needs_gloo
def test_a_two_rank_run_resumes_on_one_rank_and_exports(two_rank_run, data_dir, tmp_path):
    import shutil

    from workbench.cli import main

    runs_dir, _ = two_rank_run
    run_dir = tmp_path / "copy"
    shutil.copytree(run_folders(runs_dir)[0], run_dir)
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--data-dir", str(data_dir)]) == 0
    assert [row["epoch"] for row in epoch_rows(run_dir)] == [1, 2, 3]
    assert (run_dir / "status").read_text().startswith("finished")
    assert main(["export", str(run_dir)]) == 0
    assert (run_dir / "export" / "model.safetensors").is_file()


@needs_gloo
def test_a_two_rank_finetune_goes_from_the_head_to_every_layer_and_ctrl_c_stops_every_rank_at_one_step(
        two_rank_run, data_dir, tmp_path):
    """DistributedDataParallel learns which parameters train when it wraps the model: the engine
    wraps again when the phase changes, or the first step of phase 2 would hang or fail. Ctrl-C,
    which torchrun hands to every rank, then stops them all after the same step, with one checkpoint
    (ranks that stopped at different steps would hang in their next collective)."""
    source = run_folders(two_rank_run[0])[0]
    runs_dir = tmp_path / "runs"
    launcher = start(torchrun(*train_args(data_dir, runs_dir, "--epochs", "60", "--recipe", "finetune",
                                          "--freeze-epochs", "1", "--init-from", str(source))), tmp_path)
    try:
        run_dir = wait_for("*/metrics.jsonl", runs_dir, launcher).parent
        deadline = time.monotonic() + 180
        while len(epoch_rows(run_dir)) < 2:  # an epoch of each phase
            assert launcher.poll() is None and time.monotonic() < deadline, (tmp_path / "err.txt").read_text()[-3000:]
            time.sleep(0.1)
        launcher.send_signal(signal.SIGINT)
        launcher.wait(timeout=90)
    finally:
        launcher.kill()
    said = (tmp_path / "out.txt").read_text()
    assert said.count("epoch 1 on: head only") == 1 and said.count("epoch 2 on: every layer") == 1
    assert run_folders(runs_dir) == [run_dir]
    assert json.loads((run_dir / "run.json").read_text())["start"]["source"].startswith(f"run {source.name}")
    assert (run_dir / "status").read_text().startswith("stopped")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    end = rows[-1]
    assert end["type"] == "end" and end["status"] == "stopped" and 2 <= end["epochs_done"] < 60
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["progress"]
    assert saved["global_step"] == end["steps_done"]  # the checkpoint is where the run stopped
    assert "stopping after this step" in said


@needs_gloo
def test_a_killed_rank_restarts_the_job_from_its_checkpoint_and_past_max_restarts_ends_it_with_a_sentence(
        data_dir, tmp_path):
    """torchrun --max-restarts 1: the first killed rank restarts every rank, and they go on from the
    run's last checkpoint in the same folder; the second ends the job within a bounded time, with a
    sentence on screen and in the run's status that says how to resume."""
    runs_dir = tmp_path / "runs"
    launcher = start(torchrun(*train_args(data_dir, runs_dir, "--epochs", "60"), restarts=1), tmp_path)
    try:
        run_dir = wait_for("*/checkpoints/last.pt", runs_dir, launcher).parents[1]
        os.kill(rank_pid(launcher, 1), signal.SIGKILL)
        before = len(epoch_rows(run_dir))  # rank 0 cannot finish another epoch without rank 1
        deadline = time.monotonic() + 180
        while not ("resuming from last.pt" in (tmp_path / "out.txt").read_text() and len(epoch_rows(run_dir)) > before):
            assert launcher.poll() is None and time.monotonic() < deadline, "the restarted job trained no epoch"
            time.sleep(0.1)
        said_before = len((tmp_path / "err.txt").read_text())  # the first kill may have had its sentence too
        os.kill(rank_pid(launcher, 1), signal.SIGKILL)  # a rank of the restarted job: no restart is left
        launcher.wait(timeout=90)  # a bounded wait: a hang fails
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    assert "workbench: error: rank 0: " + SENTENCE in (tmp_path / "err.txt").read_text()[said_before:]
    assert run_folders(runs_dir) == [run_dir]  # the restarted ranks went on in the same folder
    epochs = [row["epoch"] for row in epoch_rows(run_dir)]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 2  # from the checkpoint: none twice
    status = (run_dir / "status").read_text()
    assert status.startswith("failed") and SENTENCE in status and "--resume" in status


@needs_gloo
def test_the_speedrun_recipe_is_refused_under_torchrun_before_anything_is_written(data_dir, tmp_path):
    runs_dir = tmp_path / "runs"
    done = subprocess.run(torchrun(*train_args(data_dir, runs_dir, "--epochs", "1", "--recipe", "speedrun",
                                               "--arch", "speedrun")),
                          env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.count("the speedrun recipe trains in one process") == 1  # said once, by rank 0
    assert run_folders(runs_dir) == []


@pytest.mark.parametrize("value", ["abc", "inf", "nan", "0", "-5"])
def test_distributed_timeout_variable_is_named_when_it_is_not_seconds(value, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DIST_TIMEOUT_S", value)
    with pytest.raises(WorkbenchError, match="WORKBENCH_DIST_TIMEOUT_S"):
        World(0, 2).start(torch.device("cpu"))  # refused before any process group is joined
    assert not dist.is_initialized()


def test_distributed_more_processes_than_images_is_refused_before_training():
    with pytest.raises(WorkbenchError, match="3 training images cannot be split over 4 processes"):
        World(0, 4).train_shard(3, seed=0)
    with pytest.raises(WorkbenchError, match="2 held-out images cannot be split over 4 processes"):
        World(1, 4).eval_shard(2)


def test_distributed_peer_sentence_offers_resume_only_with_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    error = RuntimeError("gloo: Connection closed by peer")
    assert "resume" not in peer_sentence(error, World(0, 2), run)
    assert "holds no checkpoint yet" in peer_sentence(error, World(0, 2), run)
    (run / "checkpoints" / "last.pt").write_bytes(b"saved")
    assert f"workbench train --resume {run}" in peer_sentence(error, World(0, 2), run)

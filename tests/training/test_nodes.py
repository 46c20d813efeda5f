"""One run on several machines (trainer.nodes; docs/remote.md, "Several nodes"): two vl-train processes on this
machine as node 0 and node 1, meeting at a free localhost port as two machines meet at node 0's address.

Two nodes of one process are the run of `trainer.devices=2`, in node 0's one folder; node 1 makes none. A bad
layout is one line; a node that dies, or is stopped, ends the other within seconds, in one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (
    VL_TRAIN,
    read_metrics,
    run_cli,
    signals_at_default,
    start_vl_train,
    wait_for_position,
    without_timing,
)
from tests.training.test_distributed import FRESH, LONGER, MLP, TWO, free_port
from visionlab import ranks


def across(args: list[str], port: int) -> list[str]:
    """`args` on 2 nodes of trainer.devices=1 each: the same command on both, but for trainer.node_rank."""
    return [*[arg for arg in args if arg not in TWO], "trainer.nodes=2", f"trainer.rendezvous=127.0.0.1:{port}"]


def start_node_1(args: list[str], cwd: Path) -> subprocess.Popen:
    """Node 1's vl-train in `cwd`, in a process group of its own (a machine of its own: all of it can be killed)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(VL_TRAIN), *args, "trainer.node_rank=1"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **FRESH},
        start_new_session=True,
        preexec_fn=signals_at_default,
    )


def test_two_nodes_are_the_run_of_two_devices_in_node_0s_one_folder(tmp_path):
    reference, run_dir = tmp_path / "devices" / "run", tmp_path / "node0" / "run"
    for folder in (reference, run_dir):
        folder.parent.mkdir()
    result = run_cli([*MLP, *TWO], reference, env=FRESH)
    assert result.returncode == 0, result.stderr
    args = across(MLP, free_port())
    node_1 = start_node_1(args, tmp_path / "node1")
    node_0 = run_cli([*args, "trainer.node_rank=0"], run_dir, env=FRESH)
    out, err = node_1.communicate(timeout=120)
    assert (node_0.returncode, node_0.stderr) == (0, "")
    assert (node_1.returncode, err) == (0, "")
    assert os.listdir(tmp_path / "node0") == ["run"] and os.listdir(tmp_path / "node1") == [], "node 1 made no folder"
    assert out.strip() == (
        f"node 1 of 2: 1 process joining the run at {args[-1].split('=')[1]}; node 0 writes it (its terminal, its run "
        "folder)"
    )
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(reference))
    log = (run_dir / "train.log").read_text()
    assert log.count("device: cpu (1 CPU threads each, 2 processes with a share of every batch of 64)") == 1


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["trainer.nodes=0"], "trainer.nodes=0 is invalid: use a whole number of nodes of at least 1"),
        (
            ["trainer.nodes=2", "trainer.node_rank=2", "trainer.rendezvous=node0:29500"],
            "trainer.node_rank=2 with trainer.nodes=2: number the nodes from 0 to 1, one number each (node 0 writes "
            "the run)",
        ),
        (
            ["trainer.nodes=2"],
            "trainer.nodes=2 needs trainer.rendezvous=HOST:PORT, where the nodes meet: node 0's address and a free "
            "port there, the same on every node",
        ),
        (
            ["trainer.nodes=2", "trainer.rendezvous=nonsense"],
            "trainer.rendezvous='nonsense' is invalid: use host:port, such as node0:29500, or null",
        ),
        (
            ["trainer.rendezvous=node0:29500"],
            "trainer.rendezvous='node0:29500' with trainer.nodes=1: a run on one node has no rendezvous, so drop it "
            "(or set trainer.nodes)",
        ),
    ],
)
def test_a_bad_layout_is_one_line_and_exit_code_2(tmp_path, overrides, line):
    result = run_cli([*MLP, *overrides], tmp_path / "run")
    assert result.returncode == 2
    (said,) = result.stderr.strip().splitlines()  # node 0's in its run's log format, node 1's alone
    assert said.endswith(f"error: {line}")


def two_nodes_in_epoch_2(args: list[str], run_dir: Path, node_1_folder: Path) -> tuple[subprocess.Popen, ...]:
    """Node 0 (writing `run_dir`) and node 1 of the run `args` make, once it has reached its second epoch."""
    node_1 = start_node_1(args, node_1_folder)
    node_0 = start_vl_train([*args, "trainer.node_rank=0"], run_dir, FRESH)
    wait_for_position(run_dir, node_0, lambda at: at["epoch"] >= 2)
    return node_0, node_1


def test_a_node_that_dies_ends_the_other_within_seconds_in_one_line(tmp_path):
    """Node 1's machine gone (its vl-train and its process killed): node 0's collective fails at once, and its
    launcher, which cannot see another node's processes, says one is gone."""
    run_dir = tmp_path / "node0" / "run"
    run_dir.parent.mkdir()
    args = across(LONGER, free_port())
    node_0, node_1 = two_nodes_in_epoch_2(args, run_dir, tmp_path / "node1")
    killed = time.monotonic()
    os.killpg(node_1.pid, signal.SIGKILL)
    node_1.communicate(timeout=60)
    _, stderr = node_0.communicate(timeout=120)
    assert time.monotonic() - killed < 30, "no hang"
    assert node_0.returncode == 1
    (line,) = stderr.strip().splitlines()
    assert line.endswith(
        "error: a process on another node is gone (that node stopped, or the network between them failed): the 1 "
        f"process here was stopped; resume={run_dir} carries on from its last.pt"
    )


def test_a_sigterm_to_node_1_stops_both_nodes_at_one_step_and_both_resume_to_the_run_left_alone(tmp_path):
    """The stop is agreed after every step, whichever node heard it; node 0 does not wait torch's 5 minutes for
    the launcher of node 1, which the signal ended (patches.no_exit_barrier). `resume=RUN` on node 0 carries on
    with the run's layout, every rank reading the checkpoint: the end of `trainer.devices=2` left alone."""
    run_dir, reference = tmp_path / "node0" / "run", tmp_path / "devices" / "run"
    for folder in (run_dir, reference):
        folder.parent.mkdir()
    args = across(LONGER, free_port())
    node_0, node_1 = two_nodes_in_epoch_2(args, run_dir, tmp_path / "node1")
    sent = time.monotonic()
    node_1.send_signal(signal.SIGTERM)
    _, err = node_1.communicate(timeout=120)
    _, stopped = node_0.communicate(timeout=120)
    assert time.monotonic() - sent < 20, "no hang"
    assert (node_0.returncode, node_1.returncode) == (143, 143), (stopped, err)
    assert err.strip().splitlines() == [
        "received SIGTERM: stopping after this step (Ctrl-C again to exit now)",  # node 1's process heard it
        "error: the run ended with exit code 143: node 0's terminal and train.log say why",
    ]
    (said,) = stopped.strip().splitlines()
    assert said.endswith("stopped by SIGTERM")
    assert read_metrics(run_dir)["status"] == "interrupted"
    node_1 = start_node_1(args, tmp_path / "node1")
    resumed = run_cli([f"resume={run_dir}"], run_dir, env=FRESH)
    node_1.communicate(timeout=120)
    assert (resumed.returncode, node_1.returncode) == (0, 0), resumed.stderr
    assert os.listdir(tmp_path / "node1") == []
    result = run_cli(LONGER, reference, env=FRESH)
    assert result.returncode == 0, result.stderr
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(reference))


def test_a_node_waits_for_node_0_a_bounded_time_and_says_so_in_one_line():
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ranks.RankFailed) as failed:
        ranks.reached(address, timeout=2)
    assert 2 <= time.monotonic() - started < 10
    assert str(failed.value) == (
        f"nobody answered at trainer.rendezvous={address} within 2 s (Connection refused): start node 0 "
        "(trainer.node_rank=0) with the same command, and check its address and port"
    )

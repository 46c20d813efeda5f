"""Where a run and a search are, as a user reads it:
the bar in a real terminal (tmux), the log's time left, trial k of N.

Each test waits for a state of the run (a checkpoint on disk) before it reads the screen; nothing
is timed: the time left is checked for its form and sense (it shrinks to the end), not its value.
"""

from __future__ import annotations

import re

from tests.conftest import TINY, VL_TRAIN, run_cli, tmux_session, wait_for_position

LONG = [
    *TINY,
    "model=cnn",
    "trainer.epochs=6",
    "trainer.batch_size=16",
    "trainer.log_every_n_steps=3",
    "trainer.early_stopping.patience=null",
]
CLOCK = r"\d+:\d\d"
# A tmux server started from pytest hands its panes COLUMNS=80 and LINES=24, which rich would take over the pane's size.
UNSIZED = "unset COLUMNS LINES; "


def seconds(clock: str) -> int:
    total = 0
    for part in clock.split(":"):
        total = total * 60 + int(part)
    return total


def test_the_bar_shows_the_time_left_for_the_epoch_and_the_run_and_the_last_val_acc(tmp_path):
    run_dir = tmp_path / "run"
    command = (
        f"{UNSIZED}'{VL_TRAIN}' {' '.join(LONG)} trainer.checkpoint_every_steps=2"  # mid-epoch states
        f" hydra.run.dir={run_dir}; sleep 60"
    )
    bars = []
    with tmux_session(command, tmp_path) as screen_now:
        for epoch in (2, 4):
            wait_for_position(
                run_dir, None, lambda position, epoch=epoch: position["epoch"] == epoch and position["batch"] >= 4
            )
            screen = screen_now()
            bar = [row for row in screen.splitlines() if "━" in row]
            assert bar, screen
            bars.append(bar[-1])
    for bar in bars:
        found = re.search(rf"epoch (\d)/6 .* val/acc \d\.\d{{4}} .*epoch ({CLOCK}) · run ({CLOCK}) left", bar)
        assert found, bar
        assert seconds(found[2]) <= seconds(found[3]), "the epoch's time left is part of the run's"
    assert int(re.search(r"epoch (\d)/6", bars[1])[1]) > int(re.search(r"epoch (\d)/6", bars[0])[1])


def test_the_log_says_the_time_left_and_at_most_with_early_stopping(tmp_path):
    plain = run_cli(
        [*TINY, "model=mlp", "trainer.epochs=3", "trainer.early_stopping.patience=null"], tmp_path / "plain"
    )
    assert plain.returncode == 0, plain.stderr
    lines = [line for line in plain.stdout.splitlines() if re.search(r"\] epoch \d/3 \(step", line)]
    lefts = [seconds(m[1]) for line in lines if (m := re.search(rf"; ({CLOCK}) left in the run$", line))]
    assert len(lefts) == 2 and "left" not in lines[-1], lines  # the last epoch has nothing left to say
    assert lefts[1] <= lefts[0] + 1, "time left shrinks as the run goes"
    steps = [line for line in plain.stdout.splitlines() if re.search(r"\] epoch \d step \d+ loss", line)]
    assert steps and all(re.search(rf"img/s, epoch {CLOCK} left$", line) for line in steps), steps

    stopping = run_cli(
        [*TINY, "model=cnn", "trainer.epochs=3", "trainer.early_stopping.patience=1"], tmp_path / "stopping"
    )
    assert stopping.returncode == 0, stopping.stderr
    assert re.search(
        rf"\] epoch 1/3 \(step \d+\) .*; at most {CLOCK} left in the run \(early stopping\)$", stopping.stdout, re.M
    )


def test_the_cnn_recipes_restarts_show_the_lr_range_of_each_epoch(tmp_path):
    result = run_cli([*TINY, "model=cnn", "trainer.early_stopping.patience=null"], tmp_path / "run")
    assert result.returncode == 0, result.stderr
    epochs = [line for line in result.stdout.splitlines() if re.search(r"\] epoch \d/2 \(step", line)]
    assert len(epochs) == 2 and all(re.search(r"  lr [\d.e-]+-[\d.e-]+(;|$)", line) for line in epochs), epochs


def test_log_lines_wrap_at_word_boundaries_on_a_narrow_terminal(tmp_path):
    run_dir = tmp_path / "run"
    command = f"{UNSIZED}'{VL_TRAIN}' {' '.join(LONG)} trainer.epochs=2 hydra.run.dir={run_dir}; sleep 60"
    with tmux_session(command, tmp_path, columns=70, rows=200) as screen_now:
        wait_for_position(run_dir, None, lambda position: position["epoch"] >= 2)
        screen = screen_now()
    words = set((run_dir / "train.log").read_text().split())
    rows = [row.rstrip() for row in screen.splitlines() if row.strip() and "━" not in row]
    continued = [row for row in rows if not row.startswith("[20")]
    epoch_line = next(row for row in rows if re.search(r"\] epoch 1/2 \(step", row))
    assert len(epoch_line) <= 70 and continued, screen  # the epoch's line is longer than the terminal: it wrapped
    broken = [token for row in continued for token in row.split() if token not in words]
    assert not broken, f"words cut by the wrap: {broken}\n{screen}"

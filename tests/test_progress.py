"""Progress a person sees: each job's bar ends at 100 % in its log, and compact lines reach the terminal the
workflow was started from (rewardlab.runtime.JobProgress)."""

import io

from rewardlab.runtime import progress_bar


def test_terminal_lines_carry_run_stage_steps_rate_eta_and_loss():
    terminal = io.StringIO()
    bar = progress_bar(4, "reward[bt]", run="bt-eps0.0-s0", terminal=terminal)
    bar._every = 0.0  # a line at every step
    for step in range(4):
        bar.set_postfix(loss=f"{0.5 / (step + 1):.4f}", refresh=False)
        bar.update(1)
    bar.close()
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 4  # one per step; close adds none when the last state is shown
    assert lines[0].startswith("rewardlab | bt-eps0.0-s0 reward[bt] 1/4 25% ") and lines[0].endswith("loss=0.5000")
    assert " it/s ETA " in lines[0] and " 0.00 it/s" not in lines[0]
    assert lines[-1].startswith("rewardlab | bt-eps0.0-s0 reward[bt] 4/4 100% ") and lines[-1].endswith("loss=0.1250")


def test_terminal_lines_are_sparse_and_end_with_the_final_state():
    terminal = io.StringIO()
    bar = progress_bar(100, "sft", run="sft", terminal=terminal)  # a line every 30 s: none in this loop
    for _ in range(100):
        bar.update(1)
    bar.close()
    assert terminal.getvalue().splitlines() == [line for line in terminal.getvalue().splitlines()
                                                if line.startswith("rewardlab | sft sft 100/100 100% ")]
    assert len(terminal.getvalue().splitlines()) == 1
    resumed = io.StringIO()
    bar = progress_bar(10, "policy[ppo/sparse]", run="ppo", initial=6, terminal=resumed)
    bar.update(1)
    bar.close()  # stopped early (a failure): the last state still reaches the terminal
    assert resumed.getvalue().startswith("rewardlab | ppo policy[ppo/sparse] 7/10 70% ")


def test_no_lines_when_progress_is_off():
    terminal = io.StringIO()
    bar = progress_bar(3, "sft", enabled=False, terminal=terminal)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert terminal.getvalue() == ""

"""compare.py --jobs N (issue #21, the preset's time): the comparison's runs as N main.py processes at once give
the numbers of one process with the same threads; growth waits for its members; a failed run stops it in one line."""

from __future__ import annotations

import compare
from conftest import parallel_and_alone
from training import runlock

RUN = ["--dataset", "digits", "--seeds", "0", "--epochs", "3", "--member_epochs", "1", "--depth", "10",
       "--wide", "0.5", "--batch_size", "128", "--methods", "ensemble,scratch_small,mixturegrowth_zero",
       "--grown_lr_grid", "0.01,0.1", "--scratch_lr_grid", "0.1", "--probe_bn", "2"]


def test_parallel_runs_give_the_numbers_of_one_process_and_growth_starts_after_its_members(tmp_path, capsys):
    parallel, printed, alone = parallel_and_alone(compare.main, RUN, tmp_path, capsys)
    members_done = next(i for i, line in enumerate(printed) if line.startswith("compare: finished members seed 0"))
    growth_started = [i for i, line in enumerate(printed) if line.startswith("compare: started mixturegrowth_zero")]
    assert len(growth_started) == 2 and min(growth_started) > members_done
    assert sorted(p.name for p in (tmp_path / "parallel" / "logs").iterdir()) == [
        "members_seed_0.txt", "mixturegrowth_zero_lr_0.01_seed_0.txt", "mixturegrowth_zero_lr_0.1_seed_0.txt",
        "scratch_small_lr_0.1_seed_0.txt"]
    keys = ("method", "seed", "lr", "top1", "val_top1", "right_after", "right_after_bn")
    assert [{k: r.get(k) for k in keys} for r in parallel["runs"]] == [{k: r.get(k) for k in keys}
                                                                       for r in alone["runs"]]


def test_a_failed_run_stops_the_comparison_with_its_status_and_sentence(tmp_path, capsys):
    out = tmp_path / "cmp"
    held = runlock.acquire(str(out / "runs" / "digits" / "scratch_small-fair-lr0.1" / "seed_0"))
    try:
        status = compare.cli(RUN + ["--methods", "scratch_small", "--jobs", "2", "--out", str(out)])
    finally:
        held.release()
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1, error
    assert "scratch_small lr 0.1 seed 0" in error[0] and "main.py exit status 2" in error[0]
    assert "in use" in error[0] and "run the same command again" in error[0]

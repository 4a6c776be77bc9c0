"""compare.py at equal training FLOPs, with the fixed recipes (short, annealed), and paired statistics."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

import compare
import main
from training import stops
from conftest import ROOT, sigterm_group_at
from reports import methods
from reports import stats


def options(*flags):
    opts, _ = compare.get_args_parser().parse_known_args(["--dataset", "digits", *flags])
    compare.apply_preset(opts)
    return opts


def planned_cost(method: str, phases: methods.Phases, flops: dict) -> float:
    if method == "scratch_small":
        return phases.total * flops["small"]
    if method == "scratch_large":
        return phases.total * flops["large"]
    member, grown = (flops["small"], flops["large"]) if method == "net2net" else (flops["member"], flops["grown"])
    return (phases.member_0 + phases.member_1) * member + phases.grown * grown


def test_flops_budget_gives_every_method_scratch_larges_training_flops():
    opts = options("--budget", "flops", "--epochs", "10", "--wide", "2")
    flops = methods.training_flops_per_image(opts)
    reference = 10 * flops["large"]
    for method in ("scratch_small", "scratch_large", "net2net", "random_growth", "mixturegrowth_orthogonal"):
        phases = methods.allocate(method, opts, flops)
        assert planned_cost(method, phases, flops) == pytest.approx(reference, rel=0.06), method
    grown = methods.allocate("mixturegrowth_orthogonal", opts, flops)
    # The paper's 200:200:40: members get far more epochs than the grown network, equally many each.
    assert grown.member_0 == grown.member_1 and grown.member_0 > 3 * grown.grown
    assert methods.allocate("scratch_small", opts, flops).total > 3 * 10


def test_epochs_budget_keeps_every_method_at_the_same_epochs():
    opts = options("--epochs", "9", "--member_epochs", "3")
    assert methods.allocate("scratch_large", opts, None) == methods.Phases(0, 0, 9)
    assert methods.allocate("mixturegrowth_zero+bn", opts, None) == methods.Phases(3, 3, 3)


def test_the_annealed_recipe_anneals_every_phase_and_scratch_runs_once():
    opts = options("--recipe", "short,annealed", "--methods", "scratch_large,mixturegrowth_zero+bn")
    assert compare.jobs(opts) == [("scratch_large", "-"), ("mixturegrowth_zero+bn", "short"),
                                  ("mixturegrowth_zero+bn", "annealed")]
    phases = methods.Phases(3, 3, 3)
    short = methods.run_command("mixturegrowth_zero+bn", "short", 0, opts, phases, [])
    annealed = methods.run_command("mixturegrowth_zero+bn", "annealed", 0, opts, phases, [])
    assert "--anneal_each_phase" in annealed and "--anneal_each_phase" not in short
    assert annealed[annealed.index("--recalibrate_bn") + 1] == "20"


def test_paired_difference_is_the_mean_with_a_95_percent_t_interval():
    runs = [{"name": "a", "seed": s, "top1": v} for s, v in enumerate((91.0, 92.0, 93.0))]
    runs += [{"name": "b", "seed": s, "top1": v} for s, v in enumerate((90.0, 90.0, 90.0))]
    difference = stats.paired_difference(runs, "a", "b")
    half = 4.302652729911275 * 1.0 / 3 ** 0.5  # t(0.975, 2) x std of (1, 2, 3) / sqrt(3)
    assert difference["mean"] == pytest.approx(2.0)
    assert (difference["low"], difference["high"]) == pytest.approx((2.0 - half, 2.0 + half))


FLOPS_RUN = ["--dataset", "digits", "--seeds", "0", "--epochs", "3", "--member_epochs", "1", "--depth", "10",
             "--wide", "0.5", "--batch_size", "256", "--budget", "flops", "--recipe", "short,annealed",
             "--methods", "scratch_large,mixturegrowth_zero+bn", "--recalibrate_bn", "2"]


def test_a_flops_budget_report_names_recipes_right_after_accuracy_and_both_flops(tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    first = compare.main(FLOPS_RUN + ["--out", str(out)])
    with open(out / "results.csv") as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"scratch_large", "mixturegrowth_zero+bn (short)", "mixturegrowth_zero+bn (annealed)"}
    for name, row in rows.items():
        assert float(row["train_flops"]) == pytest.approx(float(row["budget_flops"]), rel=0.15), name
    assert rows["mixturegrowth_zero+bn (short)"]["right_after_mean"] != ""
    text = (out / "results.md").read_text()
    assert "right after growth" in text and "vs scratch_large" in text and "budget flops" in text
    assert (out / "accuracy_vs_flops.png").stat().st_size > 0
    # The same command again reads the finished runs back: same results, no epoch trained twice.
    lines = {r["run_dir"]: len(open(os.path.join(r["run_dir"], "metrics.jsonl")).readlines()) for r in first["runs"]}
    def no_training_or_evaluation(args):
        raise AssertionError(f"main.main called for a finished run: {args.tag}")

    monkeypatch.setattr(main, "main", no_training_or_evaluation)  # finished runs are read from their files
    again = compare.main(FLOPS_RUN + ["--out", str(out)])
    assert [r["top1"] for r in again["runs"]] == [r["top1"] for r in first["runs"]]
    assert [r["wall_s"] for r in again["runs"]] == [r["wall_s"] for r in first["runs"]]  # the run's time, not the read's
    assert {r["run_dir"]: len(open(os.path.join(r["run_dir"], "metrics.jsonl")).readlines())
            for r in again["runs"]} == lines
    # --report_only trains nothing: the finished methods are reported, the others named as left out.
    partial = compare.main(FLOPS_RUN[:-4] + ["--methods", "scratch_small,scratch_large", "--recipe", "short",
                                             "--out", str(out), "--report_only"])
    assert [row["method"] for row in partial["rows"]] == ["scratch_large"]
    assert partial["unfinished"] == ["scratch_small seed 0"]
    assert "left out (--report_only): scratch_small seed 0" in (out / "results.md").read_text()
    # A finished run made with other flags is not taken for this command's run.
    changed = os.path.join(first["runs"][0]["run_dir"], "args.json")
    stored = json.loads(open(changed).read())
    stored["decay"] = stored["decay"] * 2
    open(changed, "w").write(json.dumps(stored))
    with pytest.raises(AssertionError, match="main.main called"):
        compare.main(FLOPS_RUN + ["--out", str(out)])


def test_report_only_without_a_finished_run_is_one_sentence_and_exit_2(tmp_path, capsys):
    assert compare.cli(FLOPS_RUN + ["--out", str(tmp_path / "empty"), "--report_only"]) == 2
    assert "--report_only: no run of this command has finished" in capsys.readouterr().err


def test_a_signal_to_the_comparison_stops_it_in_one_sentence_with_exit_75(tmp_path):
    # Ctrl-C or a scheduler's SIGTERM reaches compare.py and its loader workers: the running run
    # checkpoints, and compare.py says how to continue instead of printing a traceback.
    command = [sys.executable, "compare.py", *FLOPS_RUN, "--workers", "1", "--out", str(tmp_path / "cmp")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    stderr = sigterm_group_at(process, "epoch    0")
    assert process.returncode == stops.EXIT_PREEMPTED, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("compare.py: stopped by a signal during scratch_large seed 0")

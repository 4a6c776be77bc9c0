"""Issue 35: what a new user and a hostile tester hit (full disk, path-escaping tags, Ctrl-C at start-up, empty
lists, stop advice that works, finished runs left alone, ...). One test per promise."""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import subprocess
import sys
import warnings

import pytest

from conftest import ROOT, crash_once
from training import checkpoint
from training import engine
from training import stops
from training import runtime
import compare
import custom_log
import main
from mixturegrowth.run import TrainingRun
import nws
import systems
from weight_search.pretrain import pools_written
from reports import tables

CPU = ["--dataset", "digits", "--ngpu", "0", "--workers", "0"]
# A MixtureGrowth run of three epochs (member 0, member 1, grown) on 200 digits: a few seconds.
SHORT = [*CPU, "--depth", "10", "--wide", "1", "--train_subset", "200", "--batch_size", "32", "--growth_epochs", "1",
         "--ensemble_train_epochs", "1", "--epochs", "3", "--manualSeed", "7", "--reset_lr_scheduler_growing", "none",
         "--cosine_lr_warmup", "0"]
SHORT_RUN = os.path.join("digits", "run", "seed_7")
FUSE = [*CPU, "--train_subset", "100", "--val_split", "0.2", "--batch_size", "32", "--manualSeed", "4",
        "--train_members", "2", "--arch", "wrn", "--depth", "10", "--wide", "1", "--member_epochs", "1",
        "--finetune_epochs", "1"]
EVOLVE = [*CPU, "--train_subset", "200", "--batch_size", "64", "--num_cells", "1", "--head_channels", "4",
          "--cell_channels", "4", "--tail_channels", "4", "--fc_units", "8", "--population_size", "2",
          "--generations", "1", "--base_epochs", "1", "--mutation_epochs", "1", "--final_epochs", "1",
          "--manualSeed", "5"]
NWS = [*CPU, "--arch", "wrn", "--depth", "10", "--wide", "1", "--n_emb", "16", "--manualSeed", "5", "--epochs", "1"]
# A small command of every CLI (seconds each, so that a check that fails without its fix fails fast).
COMMANDS = {
    "main.py": SHORT,
    "fuse.py": FUSE,
    "evolve.py": EVOLVE,
    "nws.py pretrain": ["pretrain", *NWS, "--train_subset", "200", "--val_split", "0.2"],
    "nws.py tasks": ["tasks", *NWS, "--method", "plain_per_task", "--train_subset", "40", "--batch_size", "16",
                     "--num_tasks", "2"],
    "compare.py": ["--dataset", "digits", "--seeds", "0", "--epochs", "3", "--member_epochs", "1", "--depth", "10",
                   "--wide", "0.5", "--train_subset", "100", "--recipe", "short", "--methods", "scratch_small"],
    "systems.py": ["--dataset", "digits", "--seeds", "0", "--member_epochs", "1", "--grown_epochs", "1", "--depth",
                   "10", "--wide", "0.5", "--train_subset", "200", "--val_split", "0.2", "--methods", "ensemble",
                   "--jobs", "1"],
}


def cli_of(case: str):
    """The module of a COMMANDS key ("nws.py tasks" -> nws)."""
    return importlib.import_module(case.split(".py")[0])


def out_flag(case: str, folder) -> list:
    """Where ``case`` writes: compare.py's and systems.py's --out, the run folders' --save_path."""
    return ["--out" if case in ("compare.py", "systems.py") else "--save_path", str(folder)]


def status_of(module, argv) -> int | str:
    """The CLI's exit status; argparse's own refusals count too, a KeyboardInterrupt that escapes it is a failure."""
    try:
        return module.cli([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code
    except KeyboardInterrupt:
        return "KeyboardInterrupt escaped"


def files_under(folder) -> dict[str, str]:
    """Every file under ``folder``: its path relative to it -> a digest of its bytes."""
    found = {}
    for here, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(here, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def metrics_epochs(run_dir) -> list[int]:
    return [row["epoch"] for row in custom_log.read_metrics(os.path.join(run_dir, custom_log.METRICS_FILE))]


# --------------------------------------------------------------------------- 1. a full disk


def disk_full_after(monkeypatch, saves: int) -> None:
    """Every checkpoint save after the first ``saves`` fails as on a full disk (what torch.save raises then)."""
    real_save, done = checkpoint.torch.save, []

    def save(state, handle):
        if len(done) >= saves:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done.append(handle)
        real_save(state, handle)

    monkeypatch.setattr(checkpoint.torch, "save", save)


@pytest.mark.slow
def test_a_full_disk_before_the_first_checkpoint_says_none_exists_and_resume_auto_starts_over(
        tmp_path, monkeypatch, capsys):
    disk_full_after(monkeypatch, saves=0)
    assert status_of(main, SHORT + ["--save_path", tmp_path]) == stops.EXIT_NO_SPACE
    err = capsys.readouterr().err.strip().splitlines()
    run_dir = tmp_path / SHORT_RUN
    assert len(err) == 1 and "first checkpoint" in err[0] and "intact" not in err[0], err
    assert checkpoint.latest_checkpoint(run_dir) is None and metrics_epochs(run_dir) == [0]

    monkeypatch.undo()  # space freed; the advice: the same command plus --resume auto
    assert status_of(main, SHORT + ["--save_path", tmp_path, "--resume", "auto"]) == 0
    assert "starts over" in capsys.readouterr().out
    assert metrics_epochs(run_dir) == [0, 1, 2]  # not [0, 0, 1, 2]: the rows of the run it replaces are gone


@pytest.mark.slow
def test_a_full_disk_after_a_checkpoint_names_the_whole_checkpoint_to_resume_from(tmp_path, monkeypatch, capsys):
    disk_full_after(monkeypatch, saves=1)  # epoch 0's checkpoint.pth is written, its best.pth is not
    assert status_of(main, SHORT + ["--save_path", tmp_path]) == stops.EXIT_NO_SPACE
    err = capsys.readouterr().err.strip().splitlines()
    latest = os.path.join(tmp_path, SHORT_RUN, checkpoint.LATEST_NAME)
    assert len(err) == 1 and f"{latest}, is whole" in err[0] and "--resume auto" in err[0], err


# --------------------------------------------------------------------------- 2. --tag is one folder name


TAGGED = {**{case: argv for case, argv in COMMANDS.items() if case not in ("compare.py", "systems.py")},
          "nws.py evaluate": ["evaluate", *CPU]}  # every CLI whose run folder is <save_path>/<dataset>/<tag>/seed_*


@pytest.mark.parametrize("tag", ["../../escape", "", ".", "..", "a/b", "a\\b", "/tmp/elsewhere"])
@pytest.mark.parametrize("case", sorted(TAGGED))
def test_a_tag_that_is_not_one_folder_name_is_refused_and_nothing_is_written(case, tag, tmp_path, capsys):
    save_path = tmp_path / "deep" / "runs"
    assert status_of(cli_of(case), [*TAGGED[case], "--save_path", save_path, "--tag", tag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--tag" in err[-1] and "one folder name" in err[-1] and "Traceback" not in "\n".join(err), err
    assert files_under(tmp_path) == {} and not (tmp_path / "deep").exists()


def test_compare_refuses_a_tag_passed_through_to_main_py(tmp_path, capsys):
    assert status_of(compare, [*COMMANDS["compare.py"], "--tag", "../x", "--out", tmp_path / "report"]) == 2
    assert "--tag" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


# --------------------------------------------------------------------------- 3. Ctrl-C during start-up

# Sends this process a SIGINT when it starts importing the module named in $INTERRUPT_AT_IMPORT: a Ctrl-C
# that arrives while torch imports, at the same point of every run.
INTERRUPT_HOOK = """
import os, signal, sys

class InterruptAtImport:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ.get("INTERRUPT_AT_IMPORT"):
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptAtImport())
"""

@pytest.mark.parametrize("case", ["main.py", "compare.py", "systems.py", "fuse.py", "evolve.py", "nws.py pretrain"])
def test_ctrl_c_while_torch_imports_ends_in_one_sentence_and_exit_130(case, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(INTERRUPT_HOOK)
    script = case.split()[0]
    done = subprocess.run([sys.executable, script, *COMMANDS[case], *out_flag(case, tmp_path / "runs")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "INTERRUPT_AT_IMPORT": "torch"})
    err = done.stderr.strip().splitlines()
    assert done.returncode == 130, done.stderr
    assert len(err) == 1 and err[0].startswith(f"{script}: interrupted by SIGINT"), err
    assert not (tmp_path / "runs").exists()


def interrupted(*args, **kwargs):
    raise KeyboardInterrupt


LOADING = {  # what loads each CLI's data: a Ctrl-C arrives there, while the data set loads
    "main.py": "training.data.build_splits", "fuse.py": "training.data.build_splits",
    "evolve.py": "training.data.build_splits", "nws.py pretrain": "training.data.build_splits",
    "nws.py tasks": "weight_search.splits.load_split", "compare.py": "training.data.build_datasets",
    "systems.py": "training.data.build_datasets",
}


@pytest.mark.parametrize("case", sorted(LOADING))
def test_ctrl_c_while_the_data_loads_ends_in_one_sentence_and_exit_130(case, tmp_path, monkeypatch, capsys):
    where, name = LOADING[case].rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(where), name, interrupted)
    assert status_of(cli_of(case), [*COMMANDS[case], *out_flag(case, tmp_path / "out")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted by SIGINT" in err[0], err
    assert files_under(tmp_path) == {}


def test_ctrl_c_after_the_run_wrote_its_first_files_ends_in_one_sentence_and_exit_75(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(TrainingRun, "new_train_loader", interrupted)  # after args.json and the log
    assert status_of(main, SHORT + ["--save_path", tmp_path]) == stops.EXIT_PREEMPTED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted by SIGINT" in err[0] and "--resume auto" in err[0], err
    assert os.path.isfile(tmp_path / SHORT_RUN / "args.json")


# --------------------------------------------------------------------------- 4. systems.py's stop advice works


def stop_at_the_first_step(monkeypatch) -> None:
    """The first check for a stop request finds one, as if SIGTERM had arrived during the first step."""
    real, stopped = engine.StopRequest.requested, []

    def requested(self, device):
        if not stopped:
            stopped.append(True)
            self.signal_name = "SIGTERM"
        return real(self, device)

    monkeypatch.setattr(engine.StopRequest, "requested", requested)


@pytest.mark.slow
def test_systems_stop_message_advises_a_command_that_continues_the_report(tmp_path, monkeypatch, capsys):
    argv = [*COMMANDS["systems.py"], "--out", str(tmp_path / "report")]
    stop_at_the_first_step(monkeypatch)
    assert systems.cli(argv) == stops.EXIT_PREEMPTED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run the same systems.py command again" in err[0], err
    monkeypatch.undo()
    assert systems.cli(argv) == 0  # the advice, run: the stopped members resume and the report is written
    assert os.path.isfile(tmp_path / "report" / "results.md")


# --------------------------------------------------------------------------- 5. empty lists


def list_flags(parser):
    """(subcommand argv, flag) of every comma-separated list flag of ``parser`` and its subcommands."""
    import argparse

    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [([name, *sub], flag) for name, subparser in action.choices.items()
                      for sub, flag in list_flags(subparser)]
        elif getattr(action.type, "__name__", "").endswith(" list"):
            found.append(([], action.option_strings[0]))
    return found


LISTS = [(" ".join([f"{name}.py", *command]), flag, empty)
         for name in ("main", "compare", "systems", "fuse", "evolve", "nws")
         for command, flag in list_flags(importlib.import_module(name).get_args_parser())
         for empty in ("", ",")]


def test_the_list_flags_of_every_cli_are_found():
    assert {(case, flag) for case, flag, _ in LISTS} >= {
        ("compare.py", "--seeds"), ("compare.py", "--methods"), ("systems.py", "--finetune_lr_grid"),
        ("main.py", "--template_size"), ("fuse.py", "--member_seeds"), ("evolve.py", "--mutations"),
        ("nws.py pretrain", "--lr_milestones"), ("nws.py tasks", "--widths")}


@pytest.mark.parametrize("case, flag, empty", LISTS, ids=[f"{c} {f}={e!r}" for c, f, e in LISTS])
def test_an_empty_list_is_refused_in_one_sentence_before_anything_is_written(case, flag, empty, tmp_path, capsys):
    assert status_of(cli_of(case), [*COMMANDS[case], *out_flag(case, tmp_path / "out"), f"{flag}={empty}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert flag in err[-1] and "at least one value" in err[-1], err
    assert files_under(tmp_path) == {} and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 6. a damaged newest checkpoint


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_skipped_with_a_line_of_the_runs_own_log(tmp_path, monkeypatch, capsys):
    crash_once(monkeypatch, lambda epoch, phase: epoch == 2)
    with pytest.raises(RuntimeError, match="killed"):
        main.main(main.get_args_parser().parse_args(SHORT + ["--save_path", str(tmp_path)]))
    monkeypatch.undo()
    newest = tmp_path / SHORT_RUN / checkpoint.LATEST_NAME
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Python warning with its source line fails the run here
        assert status_of(main, SHORT + ["--save_path", tmp_path, "--resume", "auto"]) == 0
    captured = capsys.readouterr()
    line = f"warning: --resume auto: {newest} is corrupt"
    assert line in captured.out and line not in captured.err
    assert line in (tmp_path / SHORT_RUN / custom_log.LOG_FILE).read_text()
    assert metrics_epochs(tmp_path / SHORT_RUN) == [0, 1, 2]


# --------------------------------------------------------------------------- 7. another program's checkpoint


@pytest.mark.parametrize("case", ["evolve.py", "fuse.py"])
def test_resuming_from_a_main_py_checkpoint_names_the_program_that_wrote_it(case, tmp_path, capsys):
    written_by_main = tmp_path / "checkpoint.pth"
    checkpoint.save_checkpoint({"args": {"dataset": "digits"}, "epoch": 0, "metrics": [], "model": {}},
                               written_by_main)
    argv = [*COMMANDS[case], "--save_path", tmp_path / "runs", "--resume", written_by_main]
    assert status_of(cli_of(case), argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a main.py training checkpoint" in err[0], err
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- 8. one seed has no spread


def test_a_mean_over_one_seed_is_printed_without_a_spread():
    assert custom_log.format_mean_std(11.39, 0.0, 1) == "11.39"
    assert custom_log.format_mean_std(11.39, 0.42, 3) == "11.39 ± 0.42"


def test_the_reports_print_a_single_seed_without_plus_minus():
    compare_row = {"method": "scratch_large", "recipe": "fair", "epochs": "9", "lr": "0.1", "top1_mean": 11.39,
                   "top1_std": 0.0, "right_after_mean": None, "right_after_bn_mean": None, "vs_scratch_large": None,
                   "vs_random_growth": None, "seeds": 1, "params": 1e5, "inference_flops": 1e7, "budget_flops": 1e9,
                   "train_flops": 1e9, "wall_s": 10.0, "grid_wall_s": None}
    grid_row = {"method": "scratch_large", "lr": "0.1", "val_top1_mean": 11.39, "val_top1_std": 0.0,
                "chosen_in_seeds": 1, "seeds": 1}
    systems_row = {"method": "nt", "chosen": "", "top1_mean": 11.39, "top1_std": 0.0, "vs_best_member": None,
                   "right_after_val_mean": None, "params": 1e5, "inference_flops": 1e7, "finetune_flops": 1e9,
                   "length": "3 steps", "lr": "0.1", "seeds": 1}
    for table in (tables.compare_markdown([compare_row]), tables.grid_markdown([grid_row]),
                  tables.systems_markdown([systems_row])):
        assert "11.39" in table and "±" not in table, table
    assert "11.39 ± 0.50" in tables.compare_markdown([{**compare_row, "seeds": 2, "top1_std": 0.5}])


# --------------------------------------------------------------------------- 9. a finished run is left alone

@pytest.mark.slow
@pytest.mark.parametrize("case", ["main.py", "fuse.py", "evolve.py", "nws.py pretrain", "nws.py tasks"])
def test_a_finished_run_opened_again_with_resume_auto_changes_nothing_on_disk(case, tmp_path, capsys):
    module, argv = cli_of(case), [*COMMANDS[case], "--save_path", tmp_path]
    assert status_of(module, argv) == 0
    before = files_under(tmp_path)
    capsys.readouterr()
    assert status_of(module, [*argv, "--resume", "auto"]) == 0
    assert "holds a finished run" in capsys.readouterr().out
    assert files_under(tmp_path) == before  # no rewritten report or plot, no log line, no TensorBoard file


# --------------------------------------------------------------------------- 10. which pools are written


def test_the_pools_line_names_the_epoch_written_and_the_best_one_when_it_differs():
    rows = [{"epoch": 0, "val_top1": 41.0}, {"epoch": 1, "val_top1": 57.0}, {"epoch": 2, "val_top1": 52.0}]
    line = pools_written("pools.pth", 3, rows, "val")
    assert "last epoch, 2" in line and "52.00% at epoch 2" in line and "best, 57.00%, at epoch 1" in line
    assert "best" not in pools_written("pools.pth", 3, rows[:2], "val")


@pytest.mark.slow
def test_pretraining_logs_which_epochs_pools_it_wrote(tmp_path, capsys):
    assert status_of(nws, [*COMMANDS["nws.py pretrain"], "--epochs", "2", "--save_path", tmp_path]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("pools written")]
    assert "last epoch, 1" in line and "val top-1" in line and "at epoch 1" in line, line


# --------------------------------------------------------------------------- 11. what creating .venv takes


def test_env_sh_states_the_measured_time_of_creating_the_environment():
    with open(os.path.join(ROOT, "scripts", "env.sh")) as handle:
        (line,) = [line for line in handle if "creating .venv" in line]
    assert "about a minute" not in line and "minutes" in line, line

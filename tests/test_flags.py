"""Every numeric flag states its valid range and is refused outside it before anything runs (issue #16).

The walk covers every parser of every CLI entry point, so a numeric flag added later without a
range fails here. A range is stated with ``flags.add`` (see training/flags.py); values are refused while
parsing (exit 2, one sentence), or, for a few epoch counts, by ``mixturegrowth.plan.build_plan`` /
``main.validate_args`` in their own sentences, still before anything is written.
"""

from __future__ import annotations

import argparse
import math

import pytest

import compare
from training import flags, runtime
import main
from utils import parse_list

CLIS = {"main.py": main.get_args_parser, "compare.py": compare.get_args_parser}

# A short digits run: anything main.py accepts from here on would start training.
DIGITS = ["--dataset", "digits", "--depth", "10", "--wide", "1", "--epochs", "6", "--growth_epochs", "2",
          "--ensemble_train_epochs", "2", "--reset_lr_scheduler_growing", "1", "--ngpu", "0", "--workers", "0"]


# --------------------------------------------------------------------------- the walk


def parsers(parser: argparse.ArgumentParser, command: tuple = ()):
    """(subcommand words, parser): ``parser`` and, depth first, every subcommand's (``nws.py pretrain``)."""
    yield command, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, sub in action.choices.items():
                yield from parsers(sub, (*command, word))


def is_numeric(action: argparse.Action) -> bool:
    """An int or float flag, or a list of them (``utils.parse_list``, ``nargs``), by its type or its default."""
    if action.nargs == 0:  # store_true, store_const, count, help
        return False
    if flags.ranged(action) is not None or action.type in (int, float):
        return True
    if getattr(action.type, "__name__", "") in ("int list", "float list"):  # utils.parse_list(int/float, ...)
        return True
    values = action.default if isinstance(action.default, (list, tuple)) else [action.default]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def numeric_flags(cli: str, get_parser) -> list[tuple[str, argparse.Action, tuple]]:
    """("nws.py pretrain --lr", its action, ("pretrain",)), ... for every numeric flag of every parser of ``cli``."""
    return [(" ".join([cli, *command, action.option_strings[0] if action.option_strings else action.dest]),
             action, command)
            for command, parser in parsers(get_parser()) for action in parser._actions if is_numeric(action)]


def unchecked_numeric_flags(cli: str, get_parser) -> list[str]:
    """Numeric flags without a stated range (choices count as one), or whose --help does not state it."""
    missing = []
    for name, action, _ in numeric_flags(cli, get_parser):
        kind = flags.ranged(action)
        if kind is None and action.choices is None:
            missing.append(f"{name} (no range)")
        elif kind is not None and kind.describe() not in (action.help or ""):
            missing.append(f"{name} (--help does not state '{kind.describe()}')")
    return missing


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_every_numeric_flag_states_a_checked_range(cli):
    assert unchecked_numeric_flags(cli, CLIS[cli]) == []


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_help_shows_every_range(cli):
    text = " ".join(CLIS[cli]().format_help().split())
    for name, action, _ in numeric_flags(cli, CLIS[cli]):
        assert " ".join(flags.ranged(action).describe().split()) in text, name


# --------------------------------------------------------------------------- just outside


def just_outside(kind: flags.Number) -> list[str]:
    """Values one step outside each end of the range (and NaN, inf for floats)."""
    values = []
    if kind.low is not None:
        values.append(kind.low if kind.low_open else kind.low - 1 if kind.kind is int
                      else math.nextafter(kind.low, -math.inf))
    if kind.high is not None:
        values.append(kind.high if kind.high_open else kind.high + 1 if kind.kind is int
                      else math.nextafter(kind.high, math.inf))
    if kind.kind is float:
        values += [math.nan, math.inf]
    return [repr(v) for v in values]


def outside_cases(clis: dict):
    """(cli, subcommand words, flag, value, the flag's type) for each ranged flag and each value just outside."""
    for cli in sorted(clis):
        for name, action, command in numeric_flags(cli, clis[cli]):
            kind = flags.ranged(action)
            if kind is None:
                continue
            item = kind.item if isinstance(kind, flags.Numbers) else kind
            for value in just_outside(item):
                yield pytest.param(cli, command, action.option_strings[0], value, kind, id=f"{name}={value}")


def refused_while_parsing(kind, value: str) -> bool:
    """Whether the parser itself refuses ``value``: every range without ``checked_by``, and every upper end."""
    item = kind.item if isinstance(kind, flags.Numbers) else kind
    above = item.high is not None and float(value) >= item.high and not item.contains(float(value))
    return item.checked_by is None or above


def assert_refused_while_parsing(get_parser, command: tuple, flag: str, value: str, kind, capsys) -> None:
    """Exit 2 from argparse, the last line naming the flag and its range."""
    with pytest.raises(SystemExit) as stop:  # "=": argparse reads "-5e-324" after a space as an option
        get_parser().parse_known_args([*command, f"{flag}={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    item = kind.item if isinstance(kind, flags.Numbers) else kind
    assert stop.value.code == 2
    assert f"argument {flag}: " in err[-1] and item.range_text() in err[-1], err


@pytest.mark.parametrize("cli, command, flag, value, kind", list(outside_cases(CLIS)))
def test_a_value_just_outside_the_range_exits_2_naming_the_flag(cli, command, flag, value, kind, tmp_path, capsys,
                                                                 monkeypatch):
    if refused_while_parsing(kind, value):
        assert_refused_while_parsing(CLIS[cli], command, flag, value, kind, capsys)
        return
    # Refused by build_plan / validate_args: through the real entry point, which must not get to run.
    assert cli == "main.py"
    save_path = tmp_path / "runs"
    monkeypatch.setattr(runtime, "Context", lambda args: pytest.fail(f"{flag}={value} was accepted"))
    assert main.cli(DIGITS + ["--save_path", str(save_path), f"{flag}={value}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert flag in err[-1] and "Traceback" not in "\n".join(err)
    assert not save_path.exists()


# --------------------------------------------------------------------------- what a new user typed


@pytest.mark.parametrize("flag, value, says", [("--label_smoothing", "1.5", "must be in [0, 1), got 1.5"),
                                               ("--decay", "-1", "must be >= 0, got -1"),
                                               ("--learning_rate", "nan", "must be a finite number > 0, got nan")])
def test_a_wrong_value_on_a_digits_run_exits_2_before_anything_is_written(tmp_path, capsys, flag, value, says):
    save_path = tmp_path / "runs"
    with pytest.raises(SystemExit) as stop:
        main.cli(DIGITS + ["--save_path", str(save_path), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2
    assert err[-1].endswith(f": error: argument {flag}: {says}")
    assert not save_path.exists()


def test_an_unusual_but_legal_weight_decay_warns_in_one_line_and_is_kept(capsys):
    args = main.get_args_parser().parse_args(["--decay", "0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert args.decay == 0.5
    assert len(err) == 1 and "--decay 0.5" in err[0] and "0.1" in err[0]
    main.get_args_parser().parse_args(["--decay", "0.1"])
    assert capsys.readouterr().err == ""


def test_a_list_value_outside_the_range_names_the_value_and_the_list(capsys):
    with pytest.raises(SystemExit):
        main.get_args_parser().parse_args(["--template_size", "0.5,1.5,1"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("argument --template_size: each value must be in (0, 1], got 1.5 (in '0.5,1.5,1')")


def test_the_walk_finds_a_numeric_flag_without_a_range():
    def parser():
        built = argparse.ArgumentParser(prog="new.py")
        built.add_argument("--plain_int", type=int, default=1)
        built.add_argument("--float_list", type=parse_list(float, "--float_list"), default=[0.5])
        built.add_argument("--untyped", default=3)
        built.add_argument("--chosen", type=int, choices=(1, 2), default=1)
        built.add_argument("--switch", action="store_true")
        flags.add(built, "--ranged", flags.count(min=1), default=1)
        commands = built.add_subparsers()
        commands.add_parser("sub").add_argument("--sub_float", type=float, default=0.1)
        return built

    assert unchecked_numeric_flags("new.py", parser) == [
        "new.py --plain_int (no range)", "new.py --float_list (no range)", "new.py --untyped (no range)",
        "new.py sub --sub_float (no range)"]

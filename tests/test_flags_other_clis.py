"""fuse.py, evolve.py, nws.py (each subcommand) and systems.py state a checked range for every numeric flag, as
main.py and compare.py do (issue #16; tests/test_flags.py has the walk and the table).
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

import compare
from training import data
from training import flags
import main
from fusion.cli import MAX_MEMBERS
from mixturegrowth.cli import MAX_EPOCHS
from test_flags import assert_refused_while_parsing, outside_cases, refused_while_parsing, unchecked_numeric_flags
from training.training_state import seed_everything

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTHER_CLIS = {f"{name}.py": importlib.import_module(name).get_args_parser
              for name in ("fuse", "evolve", "nws", "systems") if os.path.exists(os.path.join(ROOT, f"{name}.py"))}


@pytest.mark.parametrize("cli", sorted(OTHER_CLIS))
def test_every_numeric_flag_of_the_other_clis_states_a_checked_range(cli):
    assert unchecked_numeric_flags(cli, OTHER_CLIS[cli]) == []


# A range left to a CLI's own later check (checked_by) is that CLI's test to cover, with a real command.
@pytest.mark.parametrize("cli, command, flag, value, kind",
                         [case for case in outside_cases(OTHER_CLIS) if refused_while_parsing(case.values[4],
                                                                                              case.values[3])])
def test_a_value_just_outside_a_range_of_the_other_clis_exits_2_naming_the_flag(cli, command, flag, value, kind,
                                                                               capsys):
    assert_refused_while_parsing(OTHER_CLIS[cli], command, flag, value, kind, capsys)


# --------------------------------------------------------------------------- issue 27: values that crashed or hung

def seed_cases():
    for cli, get_parser in [("main.py", main.get_args_parser), ("compare.py", compare.get_args_parser),
                            *sorted(OTHER_CLIS.items())]:
        commands = [("pretrain",), ("tasks",), ("evaluate",)] if cli == "nws.py" else [()]
        for command in commands:
            flag = "--seeds" if cli in ("compare.py", "systems.py") else "--manualSeed"
            yield pytest.param(get_parser, command, flag, id=" ".join([cli, *command, flag]))


@pytest.mark.parametrize("get_parser, command, flag", list(seed_cases()))
def test_a_seed_beyond_what_torch_accepts_exits_2_while_parsing_in_every_cli(get_parser, command, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        get_parser().parse_known_args([*command, flag, str(2**64)])
    assert stop.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err
    args, _ = get_parser().parse_known_args([*command, flag, str(flags.SEED_MAX)])
    assert flags.SEED_MAX in (args.seeds if flag == "--seeds" else [args.manualSeed])


def test_the_largest_seed_and_its_offsets_seed_everything_and_a_loader_with_a_worker():
    seed_everything(flags.SEED_MAX)
    images = torch.utils.data.TensorDataset(torch.arange(8.0))
    for seed in (flags.SEED_MAX, flags.SEED_MAX + 1000 * (MAX_MEMBERS + 1)):  # fuse.py's last member's seed
        loader = data.build_train_loader(images, batch_size=4, workers=1, seed=seed)
        loader.sampler.set_epoch(MAX_EPOCHS)  # the sampler seeds with seed + epoch
        assert sorted(torch.cat([batch for (batch,) in loader]).tolist()) == list(range(8))


@pytest.mark.parametrize("get_parser, argv, flag", [
    (main.get_args_parser, ["--epochs", "1000000000000"], "--epochs"),  # hung building the per-epoch plan
    (OTHER_CLIS["evolve.py"], ["--kernel_size", "1001"], "--kernel_size"),  # crawled
    (OTHER_CLIS["fuse.py"], ["--train_members", "1000000"], "--train_members"),  # wrote members for minutes
    (OTHER_CLIS["evolve.py"], ["--mutation_noise", "1e30"], "--mutation_noise"),  # broke function preservation
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_a_huge_value_exits_2_while_parsing(get_parser, argv, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        get_parser().parse_args(argv)
    assert stop.value.code == 2
    assert f"argument {flag}: must be in [" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_large_but_legal_mutation_noise_warns_that_it_is_not_function_preserving(capsys):
    assert OTHER_CLIS["evolve.py"]().parse_args(["--mutation_noise", "0.5"]).mutation_noise == 0.5
    assert "--mutation_noise 0.5 is above 0.01" in capsys.readouterr().err

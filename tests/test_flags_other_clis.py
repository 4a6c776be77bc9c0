"""fuse.py, evolve.py and nws.py (each subcommand) state a checked range for every numeric flag, as
main.py and compare.py do (issue #16; tests/test_flags.py has the walk and the table).
"""

from __future__ import annotations

import importlib
import os

import pytest

from test_flags import assert_refused_while_parsing, outside_cases, unchecked_numeric_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTHER_CLIS = {f"{name}.py": importlib.import_module(name).get_args_parser
              for name in ("fuse", "evolve", "nws") if os.path.exists(os.path.join(ROOT, f"{name}.py"))}


@pytest.mark.parametrize("cli", sorted(OTHER_CLIS))
def test_every_numeric_flag_of_the_other_clis_states_a_checked_range(cli):
    assert unchecked_numeric_flags(cli, OTHER_CLIS[cli]) == []


# A range left to a CLI's own later check (checked_by) is that CLI's test to cover, with a real command.
@pytest.mark.parametrize("cli, command, flag, value, kind",
                         [case for case in outside_cases(OTHER_CLIS) if case.values[4].checked_by is None])
def test_a_value_just_outside_a_range_of_the_other_clis_exits_2_naming_the_flag(cli, command, flag, value, kind,
                                                                               capsys):
    assert_refused_while_parsing(OTHER_CLIS[cli], command, flag, value, kind, capsys)

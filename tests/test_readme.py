"""The README's figures and commands that can be checked without training.

The demo's accuracies need the demo's minute of training (and move with the thread count), so they
are measured, not tested; its rows, parameter counts and FLOPs follow from the demo's own command.
"""

from __future__ import annotations

import os
import re
import shlex

import main
import models
from compute_flops import count_flops, count_parameters
from custom_log import humanize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path: str) -> str:
    with open(os.path.join(ROOT, path)) as handle:
        return handle.read()


def demo_flags() -> list[str]:
    """The training command of scripts/demo.sh, as main.py arguments."""
    script = read("scripts/demo.sh").replace("\\\n", " ")
    line = next(line for line in script.splitlines() if line.startswith('"$PYTHON" main.py "${RUN[@]}" --arch'))
    return shlex.split(line.split('"${RUN[@]}"', 1)[1]) + ["--dataset", "digits"]


def readme_demo_rows() -> dict[str, list[str]]:
    text = read("README.md")
    block = text[text.index("## Quick start"):text.index("## Reproducing the paper")]
    table = block.split("```")[3]  # the second fenced block: the summary
    rows = {}
    for line in table.strip().splitlines()[2:]:
        name, values = re.match(r"(.+?)\s{2,}(\S.*)", line).groups()
        rows[name] = values.split()
    return rows


def test_the_readme_demo_table_has_the_rows_the_demo_writes():
    args = main.get_args_parser().parse_args(demo_flags())
    assert args.recalibrate_bn > 0
    assert list(readme_demo_rows()) == ["member 0", "member 1", "grown at growth", "grown at growth, BN recalibrated",
                                        "grown final"]


def test_the_readme_demo_table_has_the_demo_networks_parameters_and_flops():
    args = main.get_args_parser().parse_args(demo_flags())
    model = models.create_model(args, 10)
    member = (humanize(count_parameters(models.materialize(model, 0))), humanize(count_flops(model, (3, 32, 32), 0)))
    models.grow(model, args)
    grown = (humanize(count_parameters(models.materialize(model, None))), humanize(count_flops(model, (3, 32, 32), None)))
    for name, values in readme_demo_rows().items():
        params, flops = values[3], values[4]
        assert (params, flops) == (member if name.startswith("member") else grown), name


def test_every_script_the_readme_names_exists():
    for path in set(re.findall(r"(scripts/[\w/]+\.sh|benchmarks/[\w/]+\.(?:sh|py))", read("README.md"))):
        assert os.path.isfile(os.path.join(ROOT, path)), path

"""Numeric flags with a stated range, checked while the command line is parsed.

    flags.add(group, "--decay", flags.number(low=0.0, warn_above=0.1), default=5e-4, help="weight decay")

adds ``--decay`` with its range in the help ("weight decay (>= 0; warns above 0.1)") and refuses
``--decay -1`` before anything runs: argparse prints the usage line and one sentence naming the
flag, the range and the value ("argument --decay: must be >= 0, got -1"), and exits 2. NaN and
inf are refused for every float flag. ``count`` is the integer form; ``numbers`` a comma-separated
list (``--template_size 0.5,0.5,1``, split by ``utils.parse_list``) whose every value is checked.

A range can be left to a later check that says it in its own sentence (``checked_by``): the flag
still states its range, and that check refuses it before anything is written. An upper end
(``high``) is always refused while parsing: it is there so that a huge value stops before it hangs
or allocates, and no later check names it.

``seed`` is the one type of every seed flag (``--manualSeed``, compare.py's ``--seeds``).
"""

from __future__ import annotations

import argparse
import math
import sys

from utils import EmptyList, parse_list

# The largest seed: torch accepts seeds up to 2**64 - 1, but the code adds offsets to a seed (the
# sampler seeds with seed + epoch, fuse.py's members with seed + 1000 (i + 1)); half the range
# leaves room for them. NumPy takes seed % 2**32 (``training_state.seed_everything``, ``training_state.init_worker``).
SEED_MAX = 2**63 - 1


class Number:
    """An argparse ``type``: a number of ``kind`` (int or float) within [low, high], either end open or absent."""

    def __init__(self, kind=float, *, low=None, high=None, low_open=False, high_open=False, warn_above=None,
                 checked_by: str | None = None) -> None:
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.warn_above = warn_above
        self.checked_by = checked_by  # where the range is refused instead (e.g. "mixturegrowth.plan.build_plan")
        self.flag = "this flag"  # set by ``add``; names the flag in the warning
        self.__name__ = "integer" if kind is int else "number"  # what argparse calls the type

    def contains(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def show(self, end) -> str:
        """An end of the range as typed: integers exactly (a seed's 9223372036854775807), floats short."""
        return str(end) if self.kind is int else f"{end:g}"

    def range_text(self) -> str:
        """">= 0", "> 0", "<= 1", "in [0, 1)"."""
        low, high = self.low, self.high
        if low is not None and high is not None:
            return (f"in {'(' if self.low_open else '['}{self.show(low)}, {self.show(high)}"
                    f"{')' if self.high_open else ']'}")
        if low is not None:
            return f"{'>' if self.low_open else '>='} {self.show(low)}"
        return f"{'<' if self.high_open else '<='} {self.show(high)}"

    def describe(self) -> str:
        """The range as the help states it."""
        return self.range_text() + (f"; warns above {self.warn_above:g}" if self.warn_above is not None else "")

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects {'an integer' if self.kind is int else 'a number'} "
                                             f"{self.range_text()}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number {self.range_text()}, got {text}")
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if (self.checked_by is None or above) and not self.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self.range_text()}, got {text}")
        if self.warn_above is not None and value > self.warn_above:
            print(f"warning: {self.flag} {text} is above {self.warn_above:g}, which is unusual (a typo?); "
                  "going on with it", file=sys.stderr)
        return value


class Numbers:
    """An argparse ``type``: comma-separated numbers (``utils.parse_list``), each within ``item``'s range."""

    def __init__(self, item: Number) -> None:
        self.item = item
        self.__name__ = f"{item.__name__} list"

    @property
    def flag(self) -> str:
        return self.item.flag

    @flag.setter
    def flag(self, flag: str) -> None:
        self.item.flag = flag

    @property
    def checked_by(self) -> str | None:
        return self.item.checked_by

    def describe(self) -> str:
        return f"each {self.item.describe()}"

    def __call__(self, text: str) -> list:
        try:
            return parse_list(self.item, self.flag)(text)
        except EmptyList:
            raise
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"each value {error} (in {text!r})") from None


def number(kind=float, *, low=None, high=None, low_open=False, high_open=False, warn_above=None,
           checked_by: str | None = None) -> Number:
    """A float (or ``kind``) flag's type; e.g. ``number(low=0.0, high=1.0, high_open=True)`` is [0, 1)."""
    return Number(kind, low=low, high=high, low_open=low_open, high_open=high_open, warn_above=warn_above,
                  checked_by=checked_by)


def count(min: int = 0, *, high: int | None = None, warn_above: int | None = None,
          checked_by: str | None = None) -> Number:
    """An integer flag's type: an integer >= ``min`` (and <= ``high``)."""
    return Number(int, low=min, high=high, warn_above=warn_above, checked_by=checked_by)


def seed() -> Number:
    """A seed's type: an integer in [0, ``SEED_MAX``], which every seeding call of the toolkit accepts."""
    return Number(int, low=0, high=SEED_MAX)


def numbers(item: Number) -> Numbers:
    """A comma-separated list flag's type, e.g. ``numbers(number(low=0.0, low_open=True, high=1.0))``."""
    return Numbers(item)


def folder_name(text: str) -> str:
    """An argparse ``type`` for a flag that becomes one folder of a path (``--tag`` in
    ``<save_path>/<dataset>/<tag>/seed_<seed>``): one name, so the run stays under ``--save_path``.

    ``--tag ../../escape`` would write outside it, ``--tag a/b`` two levels down, ``--tag ''`` or
    ``--tag .`` no level at all (two tags sharing one folder).
    """
    if text in ("", ".", "..") or any(character in text for character in "/\\\0"):
        raise argparse.ArgumentTypeError(f"must be one folder name (not empty, not '.' or '..', without '/' or "
                                         f"'\\'), got {text!r}")
    return text


def add(group, flag: str, kind: Number | Numbers, **kwargs) -> argparse.Action:
    """``group.add_argument(flag, type=kind, **kwargs)`` with the range appended to the help."""
    kind.flag = flag
    nargs = kwargs.get("nargs")
    each = "each " if isinstance(kind, Number) and (nargs in ("+", "*") or isinstance(nargs, int)) else ""
    kwargs["help"] = f"{kwargs.get('help') or ''} ({each}{kind.describe()})".lstrip()
    return group.add_argument(flag, type=kind, **kwargs)


def ranged(action: argparse.Action) -> Number | Numbers | None:
    """The range an argument was added with, or None (not added by ``add``)."""
    return action.type if isinstance(action.type, (Number, Numbers)) else None

"""Run logging: text log, per-epoch JSON metrics, TensorBoard, progress bars and summary tables.

Every run writes into its run folder ``<save_path>/<dataset>/<tag>/seed_<seed>/``::

    log.txt          timestamped copy of everything printed with ``RunLogger.info``
    metrics.jsonl    one JSON object per epoch (``RunLogger.log_epoch``; ``read_metrics``)
    tensorboard/     TensorBoard event files (scalars per epoch, text such as the args)
    *.png            accuracy plots written at the end (``reports.plots.plot_accuracy``)

Only the main process logs. Other ranks build ``RunLogger(..., enabled=False)``, which creates
nothing and prints nothing, so the training loop can call the logger unconditionally.

TensorBoard is imported only when used, so importing this module is cheap. The plots are in ``reports/plots.py``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from tqdm import tqdm

LOG_FILE = "log.txt"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


# --------------------------------------------------------------------------------------------
# RunLogger


class RunLogger:
    """Writes one run's log.txt, metrics.jsonl and TensorBoard events.

    ``enabled=False`` (non-main ranks): every method is a no-op; nothing is created or printed.
    ``run_dir=None``: messages are printed, no file is written.
    Files are opened in append mode, so a resumed run continues the same log and metrics; it calls
    ``continue_at`` with the epoch it goes on at, so that its logs equal an uninterrupted run's.
    After ``close`` the logger keeps printing but writes no more files.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike | None,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
    ) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._log_file = None
        self._metrics_file = None
        self._writer = None
        if not enabled or self.run_dir is None:
            return

        self.run_dir.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(self.metrics_path)
        self._log_file = open(self.log_path, "a", encoding="utf-8")
        self._metrics_file = open(self.metrics_path, "a", encoding="utf-8")
        if tensorboard:
            self._writer = self._new_writer()

    def _new_writer(self, purge_step: int | None = None):
        # Imported here: torch.utils.tensorboard pulls in torch and tensorboard (slow).
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.tensorboard_dir), purge_step=purge_step)

    @property
    def log_path(self) -> Path | None:
        return self.run_dir / LOG_FILE if self.run_dir is not None else None

    @property
    def metrics_path(self) -> Path | None:
        return self.run_dir / METRICS_FILE if self.run_dir is not None else None

    @property
    def tensorboard_dir(self) -> Path | None:
        return self.run_dir / TENSORBOARD_DIR if self.run_dir is not None else None

    def info(self, message: str) -> None:
        """Print ``message`` (without breaking progress bars) and append it to log.txt."""
        if not self.enabled:
            return
        tqdm.write(str(message), file=sys.stdout)
        self._append_log(str(message))

    def log_epoch(self, metrics: Mapping[str, Any]) -> None:
        """Record one epoch: a JSON line in metrics.jsonl and the numeric values in TensorBoard.

        ``metrics["epoch"]`` is required and is the TensorBoard step. Every int/float value
        (bools excluded) becomes the scalar tag ``<key>``; keys such as ``"test/top1"`` are grouped
        by TensorBoard at the ``/``. Strings (e.g. ``"phase": "member_0"``) go to the JSON line
        only; pass ``"phase_index"`` to see the phase as a scalar. Both files are flushed, so a
        crash loses at most the epoch being written.
        """
        if not self.enabled:
            return
        if "epoch" not in metrics:
            raise KeyError("log_epoch needs an 'epoch' entry in the metrics")
        record = {key: _plain(value) for key, value in metrics.items()}
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(record) + "\n")
            self._metrics_file.flush()
        if self._writer is not None:
            step = int(record["epoch"])
            for key, value in record.items():
                if key != "epoch" and is_number(value):
                    self._writer.add_scalar(key, value, global_step=step)
            self._writer.flush()

    def continue_at(self, epoch: int) -> int:
        """A resumed run goes on at ``epoch``: forget what the stopped run logged for it and later; returns
        how many rows of metrics.jsonl that dropped.

        The rows of metrics.jsonl with ``"epoch" >= epoch`` were written after the checkpoint the run
        resumes from (between it and a crash), and are written again now: they leave the file. In
        TensorBoard a new event file starts with ``purge_step=epoch``, which hides the old events of
        those steps. Then metrics.jsonl and TensorBoard equal an uninterrupted run's.
        """
        if not self.enabled or self._metrics_file is None:
            return 0
        self._metrics_file.close()
        with open(self.metrics_path, encoding="utf-8") as handle:
            lines = handle.read().splitlines(keepends=True)
        kept = [line for line in lines if not _logged_at_or_after(line, epoch)]
        if len(kept) < len(lines):
            tmp = self.metrics_path.with_name(f".{METRICS_FILE}.tmp{os.getpid()}")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, self.metrics_path)
        self._metrics_file = open(self.metrics_path, "a", encoding="utf-8")
        if self._writer is not None:
            self._writer.close()
            self._writer = self._new_writer(purge_step=int(epoch))
        return len(lines) - len(kept)

    def log_text(self, tag: str, text: str, *, markdown: bool = False) -> None:
        """Store a block of text (the args, the phase plan) in TensorBoard and in log.txt.

        TensorBoard renders text as Markdown; unless ``markdown=True`` the text is indented
        four spaces so it shows verbatim (aligned tables, newlines kept).
        """
        if not self.enabled:
            return
        self._append_log(f"[{tag}]\n{text}")
        if self._writer is not None:
            shown = text if markdown else "\n".join("    " + line for line in text.splitlines())
            self._writer.add_text(tag, shown)
            self._writer.flush()

    def close(self) -> None:
        """Flush and close every file. Safe to call twice."""
        for handle in (self._log_file, self._metrics_file, self._writer):
            if handle is not None:
                handle.close()
        self._log_file = self._metrics_file = self._writer = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None and self.enabled:
            # The traceback itself goes to stderr; the log only records that the run stopped.
            self._append_log(f"run stopped by {exc_type.__name__}: {exc}")
        self.close()

    def _append_log(self, text: str) -> None:
        if self._log_file is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        lines = text.splitlines() or [""]
        self._log_file.write("".join(f"{stamp}  {line}\n" for line in lines))
        self._log_file.flush()


def _drop_torn_tail(path: Path) -> None:
    """Cut an unfinished last line (a crash mid-write) so that appending starts on a clean line.

    A last line that is complete JSON and only lacks its newline is kept and terminated.

    Without this a resumed run would glue its first record onto the torn one, and the corrupt
    line would then sit in the middle of the file, where ``read_metrics`` refuses it.
    """
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
    except ValueError:
        with open(path, "r+b") as handle:
            handle.truncate(start)
    else:  # complete record, only its newline is missing
        with open(path, "ab") as handle:
            handle.write(b"\n")


def _logged_at_or_after(line: str, epoch: int) -> bool:
    """Whether a metrics.jsonl line is a record of ``epoch`` or later (a broken line is kept as it is)."""
    try:
        logged = json.loads(line).get("epoch")
    except (ValueError, AttributeError):
        return False
    return is_number(logged) and logged >= epoch


def _plain(value: Any) -> Any:
    """Turn 0-d tensors / NumPy scalars into Python numbers so json.dumps accepts them."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):  # not a single element
            pass
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def is_number(value: Any) -> bool:
    """A real number (int, float, NumPy scalar), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Reading metrics back


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Parse a metrics.jsonl file into a list of dicts, one per epoch, in file order.

    A torn last line (the process died while writing it) is skipped. A broken line anywhere
    else is real corruption and raises ``ValueError`` naming the line. A missing file raises
    ``FileNotFoundError``. A resumed run may repeat an epoch; every record is returned as is.
    """
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                break  # torn last line
            raise ValueError(f"{path}: line {number} is not valid JSON ({error})") from None
    return rows


# --------------------------------------------------------------------------------------------
# Progress bars


def progress(
    iterable: Iterable,
    *,
    desc: str,
    total: int | None = None,
    enabled: bool = True,
    leave: bool = False,
) -> Iterable:
    """A tqdm bar when ``enabled`` and stdout is a terminal; otherwise ``iterable`` unchanged.

    No bar on non-main ranks, in CI logs or when stdout is piped to a file, where bars would only
    fill the log with carriage returns. The bar draws on stdout, the stream ``RunLogger.info``
    prints to, so tqdm can keep the two from overwriting each other.
    """
    if not enabled or not _stdout_is_terminal():
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=leave, file=sys.stdout, dynamic_ncols=True)


def _stdout_is_terminal() -> bool:
    isatty = getattr(sys.stdout, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


# --------------------------------------------------------------------------------------------
# Tables

_UNITS = ("", "k", "M", "G", "T", "P")


def humanize(value: float) -> str:
    """A count with three significant digits and a unit: 36_479_000 -> '36.5M', 1.234e9 -> '1.23G'.
    """
    if not math.isfinite(value):
        return str(value)
    scaled, unit = float(value), 0
    while abs(scaled) >= 1000 and unit < len(_UNITS) - 1:
        scaled, unit = scaled / 1000, unit + 1
    text = f"{scaled:.3g}"
    if abs(float(text)) >= 1000 and unit < len(_UNITS) - 1:  # 999.7k rounds to 1e+03k
        scaled, unit = scaled / 1000, unit + 1
        text = f"{scaled:.3g}"
    return text + _UNITS[unit]


def format_mean_std(mean: float, std: float, count: int) -> str:
    """A mean over ``count`` seeds: '83.10 ± 0.42'; with one seed the value alone ('83.10'), since a
    single value has no spread and '± 0.00' would claim one was measured."""
    return f"{mean:.2f}" if count == 1 else f"{mean:.2f} ± {std:.2f}"


def format_seconds(seconds: float) -> str:
    """Wall time for humans: 75 -> '1m15s', 7384 -> '2h03m04s'. Use it in ``formats``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_value(value: Any) -> str:
    """Default cell format.

    Missing -> '-'; numbers of magnitude >= 1e6 (parameters, FLOPs) -> ``humanize``; other ints
    as is; floats with 2 decimals (accuracies in percent), tiny floats (learning rates) in
    scientific notation; anything else ``str``.
    """
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if not math.isfinite(value):
        return str(float(value))
    if abs(value) >= 1e6:
        return humanize(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2e}"
    return f"{value:.2f}"


def _cells(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None,
    formats: Mapping[str, Callable[[Any], str]] | None,
) -> tuple[list[str], list[list[str]], list[bool]]:
    """Column names, formatted cells and, per column, whether it is numeric (right-aligned)."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    formats = formats or {}
    body, numeric = [], []
    for column in columns:
        present = [row[column] for row in rows if row.get(column) is not None]
        numeric.append(bool(present) and all(is_number(v) for v in present))
    for row in rows:
        line = []
        for column in columns:
            value = row.get(column)
            formatter = formats.get(column, format_value)
            line.append("-" if value is None else formatter(value))
        body.append(line)
    return list(columns), body, numeric


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    formats: Mapping[str, Callable[[Any], str]] | None = None,
) -> str:
    """A plain-text table: header, a line of dashes, one line per row; every line equally wide.

    ``columns`` picks and orders the columns (default: every key, in order of first appearance).
    ``formats`` maps a column to a function value -> str (e.g. ``{"wall": format_seconds}``);
    other cells use ``format_value``. Numeric columns are right-aligned, text left-aligned.
    Missing cells show '-'.
    """
    columns, body, numeric = _cells(rows, columns, formats)
    if not columns:
        return ""
    widths = [max([len(c)] + [len(line[i]) for line in body]) for i, c in enumerate(columns)]

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric)
        )

    lines = [render(columns), "  ".join("-" * width for width in widths)]
    lines += [render(line) for line in body]
    return "\n".join(lines)


def format_markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    formats: Mapping[str, Callable[[Any], str]] | None = None,
) -> str:
    """The same table as ``format_table`` in GitHub Markdown (numeric columns right-aligned)."""
    columns, body, numeric = _cells(rows, columns, formats)
    if not columns:
        return ""

    def render(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [render(columns), "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    lines += [render(line) for line in body]
    return "\n".join(lines)

"""custom_log: what a run folder contains, who writes it, and how results are shown."""

import io
import json
import math

import pytest
from tqdm import tqdm

from custom_log import (
    RunLogger,
    format_markdown_table,
    format_table,
    humanize,
    progress,
    read_metrics,
)
from reports.plots import plot_accuracy

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _epochs(n_member=3, n_grown=2, flops=False):
    rows = []
    for epoch in range(2 * n_member + n_grown):
        phase = "member_0" if epoch < n_member else "member_1" if epoch < 2 * n_member else "grown"
        row = {"epoch": epoch, "phase": phase, "test_top1": 50.0 + epoch}
        row["train_top1"] = 55.0 + epoch
        if flops:
            row["train_flops_cumulative"] = 1e12 * (epoch + 1)
        rows.append(row)
    return rows


def _is_png(path):
    data = open(path, "rb").read()
    return data[:8] == PNG_SIGNATURE and len(data) > 5000


# ---------------------------------------------------------------- metrics.jsonl


def test_log_epoch_writes_one_json_line_per_call(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log_epoch({"epoch": 0, "phase": "member_0", "test_top1": 12.5, "lr": 0.1})
        logger.log_epoch({"epoch": 1, "phase": "member_0", "test_top1": 20.25, "lr": 0.05})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[1] == {"epoch": 1, "phase": "member_0", "test_top1": 20.25, "lr": 0.05}


def test_log_epoch_requires_epoch(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger, pytest.raises(KeyError):
        logger.log_epoch({"test_top1": 1.0})


def test_metrics_are_on_disk_before_close(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log_epoch({"epoch": 0, "test_top1": 1.0})
    # A crash now must not lose the epoch: the line is already flushed.
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"epoch": 0, "test_top1": 1.0}]
    logger.close()


def test_log_epoch_accepts_tensor_and_numpy_scalars(tmp_path):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log_epoch({"epoch": 0, "loss": torch.tensor(0.5), "top1": np.float32(25.0)})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"epoch": 0, "loss": 0.5, "top1": 25.0}]


def test_read_metrics_skips_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0, "top1": 10.0}\n{"epoch": 1, "top1": 11.0}\n{"epoch": 2, "to')
    assert [row["epoch"] for row in read_metrics(path)] == [0, 1]


def test_read_metrics_refuses_corruption_in_the_middle(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epo\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(path)


def test_resumed_logger_drops_torn_line_before_appending(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1, "te')
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log_epoch({"epoch": 1})
    assert read_metrics(path) == [{"epoch": 0}, {"epoch": 1}]


def test_nan_metric_round_trips(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log_epoch({"epoch": 0, "train_loss": float("nan")})
    assert math.isnan(read_metrics(tmp_path / "metrics.jsonl")[0]["train_loss"])


# ---------------------------------------------------------------- TensorBoard


def _accumulator(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def test_tensorboard_scalars_have_values_and_epoch_steps(tmp_path):
    with RunLogger(tmp_path) as logger:
        for epoch in range(3):
            logger.log_epoch({
                "epoch": epoch, "phase": "member_0", "phase_index": 0, "test/top1": 10.0 * epoch,
                "lr": 0.1, "best": True,
            })
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    scalars = _accumulator(tmp_path).Tags()["scalars"]
    assert set(scalars) == {"phase_index", "test/top1", "lr"}  # no strings, no bools, no epoch
    events = _accumulator(tmp_path).Scalars("test/top1")
    assert [e.step for e in events] == [0, 1, 2]
    assert [e.value for e in events] == pytest.approx([0.0, 10.0, 20.0])


def test_log_text_reaches_tensorboard_and_log_txt(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.log_text("args", "lr: 0.1\nepochs: 440")
    assert "args" in " ".join(_accumulator(tmp_path).Tags()["tensors"])
    log = (tmp_path / "log.txt").read_text()
    assert "[args]" in log and "epochs: 440" in log


def test_tensorboard_false_writes_no_event_files(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log_epoch({"epoch": 0, "x": 1.0})
    assert not (tmp_path / "tensorboard").exists()


# ---------------------------------------------------------------- who writes what


def test_disabled_logger_creates_nothing_and_prints_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with RunLogger(run_dir, enabled=False) as logger:
        logger.info("hello")
        logger.log_epoch({"epoch": 0, "test_top1": 1.0})
        logger.log_text("args", "x")
    assert not run_dir.exists()
    assert list(tmp_path.iterdir()) == []
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_no_run_dir_prints_but_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with RunLogger(None) as logger:
        logger.info("only on screen")
        logger.log_epoch({"epoch": 0, "test_top1": 1.0})
        logger.log_text("args", "x")
    assert "only on screen" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_info_prints_and_appends_timestamped_lines(tmp_path, capsys):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.info("first")
    with RunLogger(tmp_path, tensorboard=False) as logger:  # a resumed run appends
        logger.info("second")
    assert capsys.readouterr().out.splitlines() == ["first", "second"]
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == ["first", "second"]
    assert all(line[:4].isdigit() and line[4] == "-" for line in lines)  # 2024-...


def test_exception_inside_context_is_recorded_and_files_closed(tmp_path):
    with pytest.raises(RuntimeError):
        with RunLogger(tmp_path, tensorboard=False) as logger:
            raise RuntimeError("out of memory")
    assert "RuntimeError: out of memory" in (tmp_path / "log.txt").read_text()
    logger.info("after close still prints")  # no file left open to write to, no error


# ---------------------------------------------------------------- progress


def test_progress_is_plain_iterable_when_not_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stdout", io.StringIO())
    items = [1, 2, 3]
    result = progress(items, desc="train")
    assert result is items and not isinstance(result, tqdm)
    assert list(result) == items


def test_progress_is_plain_iterable_when_disabled(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdout", Terminal())
    result = progress(range(4), desc="train", enabled=False)
    assert not isinstance(result, tqdm)
    assert list(result) == [0, 1, 2, 3]


def test_progress_shows_bar_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    bar = progress(range(4), desc="train")
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2, 3]
    assert "train" in terminal.getvalue()


# ---------------------------------------------------------------- tables

SUMMARY = [
    {"model": "member 0", "top1": 94.1234, "params": 9_130_000, "flops": 1.3e9, "epochs": 200},
    {"model": "member 1", "top1": 94.0, "params": 9_130_000, "flops": 1.3e9, "epochs": 200},
    {"model": "grown final", "top1": 95.5, "params": 36_479_194, "flops": 5.25e9, "epochs": 40},
]


def test_humanize_uses_three_significant_digits():
    assert humanize(36_479_194) == "36.5M"
    assert humanize(1_234_000_000) == "1.23G"
    assert humanize(999_999) == "1M"
    assert humanize(512) == "512"


def test_format_table_aligns_columns_and_humanises_counts():
    table = format_table(SUMMARY)
    lines = table.splitlines()
    assert len(lines) == 2 + len(SUMMARY)
    assert len({len(line) for line in lines}) == 1  # every line equally wide
    assert set(lines[1]) <= {"-", " "}
    assert "94.12" in table and "36.5M" in table and "5.25G" in table and "1.3G" in table
    # Numeric columns are right-aligned: every cell of "top1" ends where its header ends.
    end = lines[0].index("top1") + len("top1")
    assert all(line[end - 1] != " " and line[end:end + 1] in ("", " ") for line in lines[2:])


def test_format_table_columns_formats_and_missing_cells():
    rows = [{"model": "a", "wall": 75.0}, {"model": "b"}]
    table = format_table(rows, columns=["wall", "model"], formats={"wall": lambda s: f"{s:.0f}s"})
    lines = table.splitlines()
    assert lines[0].split() == ["wall", "model"]
    assert lines[2].split() == ["75s", "a"]
    assert lines[3].split() == ["-", "b"]


def test_markdown_table_has_header_separator_and_one_row_each():
    table = format_markdown_table(SUMMARY, columns=["model", "top1", "params"])
    lines = table.splitlines()
    assert len(lines) == 2 + len(SUMMARY)
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert all(line.count("|") == 4 for line in lines)
    assert lines[1] == "|---|---:|---:|"
    assert lines[-1] == "| grown final | 95.50 | 36.5M |"


# ---------------------------------------------------------------- plots


def test_plot_accuracy_writes_png_with_growth_lines(tmp_path):
    out = plot_accuracy(_epochs(), tmp_path / "acc.png", growth_epochs=[3, 6], title="wrn28")
    assert out == str(tmp_path / "acc.png")
    assert _is_png(out)
    assert not (tmp_path / "acc_vs_flops.png").exists()  # no FLOPs in the rows


def test_plot_accuracy_without_growth_lines(tmp_path):
    rows = [{"epoch": e, "phase": "plain", "test_top1": 10.0 * e} for e in range(5)]
    assert _is_png(plot_accuracy(rows, tmp_path / "plain.png"))


def test_plot_accuracy_writes_flops_plot_beside_it(tmp_path):
    plot_accuracy(_epochs(flops=True), tmp_path / "plots" / "acc.png", growth_epochs={6: "growth"})
    assert _is_png(tmp_path / "plots" / "acc.png")
    assert _is_png(tmp_path / "plots" / "acc_vs_flops.png")


def test_plot_accuracy_empty_and_single_row_still_write_png(tmp_path):
    assert _is_png(plot_accuracy([], tmp_path / "empty.png"))
    one = [{"epoch": 0, "phase": "member_0", "test_top1": 10.0, "train_flops_cumulative": 1e12}]
    assert _is_png(plot_accuracy(one, tmp_path / "one.png", growth_epochs=[0]))
    assert _is_png(tmp_path / "one_vs_flops.png")
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["empty.png", "one.png", "one_vs_flops.png"]  # no temporary file left


def test_a_resumed_run_drops_the_rows_logged_after_its_checkpoint_from_metrics_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLogger(tmp_path) as stopped:  # epochs 3 and 4 were logged, then the run died before checkpointing 3
        for epoch in range(5):
            stopped.log_epoch({"epoch": epoch, "loss": float(epoch)})
    with RunLogger(tmp_path) as resumed:
        resumed.continue_at(3)
        for epoch in (3, 4):
            resumed.log_epoch({"epoch": epoch, "loss": 10.0 + epoch})
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"epoch": 0, "loss": 0.0}, {"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 2.0},
        {"epoch": 3, "loss": 13.0}, {"epoch": 4, "loss": 14.0}]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0)]

"""The tables bench_step.py prints: one row per (network, case, batch size) as it is measured, and the
template/plain ratios of earlier runs side by side (``--ratios``)."""

from __future__ import annotations

import json

from common import median


def print_ratios(paths: list[str]) -> None:
    """template/plain step-time ratios of earlier runs, one column per run (a missing file is named and skipped)."""
    runs = []
    for path in paths:
        try:
            with open(path) as handle:
                payload = json.load(handle)
        except (OSError, ValueError) as error:
            print(f"{path}: not read ({error})")
            continue
        settings = payload["settings"]
        label = "+".join([name for name, on in (("amp", settings.get("amp")),
                                                ("channels_last", settings.get("channels_last"))) if on] or ["fp32"])
        runs.append((label, {(row["network"], row["case"], row["batch_size"]): row for row in payload["results"]}))
    if not runs:
        return
    keys = list(dict.fromkeys(key for _, rows in runs for key in rows))
    print("template / plain step time (median over repeats; A/A rows: plain vs plain, the noise floor)")
    print(f"{'network':9} {'case':17} {'batch':>5}" + "".join(f" {label:>20}" for label, _ in runs))
    for key in keys:
        cells = []
        for _, rows in runs:
            row = rows.get(key)
            cells.append(f"{'':>20}" if row is None else
                         f" {row['ratio']:6.3f} ({row['template_s'] * 1e3:5.1f} ms)".rjust(21))
        print(f"{key[0]:9} {key[1]:17} {key[2]:5d}" + "".join(cells))


def table_header(memory: bool, cpu_time: bool) -> str:
    header = (f"{'network':9} {'case':17} {'batch':>5} {'template s':>10} {'plain s':>9} {'busy':>4} "
              f"{'ratio':>6} {'min-max':>11} {'quiet':>6}")
    if cpu_time:
        header += f" {'cpu ratio':>9} {'min-max':>11} {'quiet':>6}"
    return header + (f" {'template MB':>11} {'plain MB':>9}" if memory else "")


def table_row(row: dict, memory: bool) -> str:
    busy = "n/a" if row["others_cpu_share"] is None else f"{median(row['others_cpu_share']):.0%}"
    line = (f"{row['network']:9} {row['case']:17} {row['batch_size']:5d} {row['template_s']:10.4f} "
            f"{row['plain_s']:9.4f} {busy:>4}")
    for prefix, width in (("", 6), ("cpu_", 9)):
        if f"{prefix}ratio" in row:
            quiet = row.get(prefix + "quiet_ratio")
            line += (f" {row[prefix + 'ratio']:{width}.3f} {row[prefix + 'ratio_min']:5.3f}-"
                     f"{row[prefix + 'ratio_max']:5.3f} {'n/a' if quiet is None else f'{quiet:.3f}':>6}")
    if memory:
        line += "".join(f" {'n/a' if mb is None else f'{mb:.0f}':>{width}}" for mb, width in
                        ((row.get("template_peak_mb"), 11), (row.get("plain_peak_mb"), 9)))
    return line

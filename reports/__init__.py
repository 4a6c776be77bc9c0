"""The reports over many runs: compare.py (ways of building the large network) and systems.py (what to do with
two trained networks) are entry points over this package; each keeps its command line, its presets and the
rows it reports.

    records.py       a finished run read from its folder into typed records (``MainRun``, ``FuseRun``,
                     ``SummaryRow``: what a row is, in fields), and the reader of older run folders
    runs.py          main.py runs read back when finished, else trained here; the test set read once
    entries.py       what a report needs of one run or one (method, seed): a row of runs.csv
    stats.py         means, paired differences with 95% t intervals, rows per method, lr grids, the premise
    tables.py        CSV and markdown tables, results.md
    plots.py         one run's accuracy curves (every entry point's), compare.py's and systems.py's plots
    jobs.py          the process pool of ``--jobs N``: jobs, failures, signals
    methods.py       compare.py's methods as main.py runs: phases, FLOPs budgets, command lines
    presets.py       compare.py's presets (regimes and their rows)
    comparison.py    the runs of one compare.py command
    systems_runs.py  systems.py's runs: the fine-tuning budget, fuse.py's runs, each seed's rows

To add a row, a statistic or a plot: methods.py / presets.py, stats.py, plots.py.
"""

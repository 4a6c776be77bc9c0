import contextlib
import os
import signal
import sys

# Idle OpenMP threads sleep instead of spinning: on a 2-core machine shared with other
# processes, spinning threads make small convolutions two orders of magnitude slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def parse():
    """Parse CLI flags exactly as ``python main.py ...`` would."""
    import main

    return lambda *flags: main.get_args_parser().parse_args([str(f) for f in flags])


# A tiny but complete MixtureGrowth run on the digits: 3 epochs member 0, 3 member 1, 3 grown.
TINY_RUN = ["--dataset", "digits", "--depth", "10", "--wide", "1", "--epochs", "9", "--growth_epochs", "3",
            "--ensemble_train_epochs", "3", "--reset_scheduler", "--reset_lr_scheduler_growing", "none",
            "--cosine_lr_warmup", "0", "--lr_growing", "0.05", "--lr_warmup_growing", "0",
            "--member_0_loss_weight", "1", "--batch_size", "64", "--workers", "0", "--ngpu", "0",
            "--manualSeed", "3", "--tag", "e2e"]


def tiny_args(save_path, *extra):
    import main

    return main.get_args_parser().parse_args(TINY_RUN + ["--save_path", str(save_path), *map(str, extra)])


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    """The uninterrupted reference run, shared by every test that compares against it."""
    import main

    args = tiny_args(tmp_path_factory.mktemp("full"))
    return args, main.main(args)


@contextlib.contextmanager
def torch_threads(count: int):
    """This process computes with ``count`` threads inside the block (what a ``--jobs`` process had)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parallel_and_alone(entry, run: list[str], out, capsys) -> tuple[dict, list[str], dict]:
    """``entry`` (compare.main or systems.main) on ``run`` with ``--jobs 2``, the lines it printed, and the same
    run in one process with the threads each of those processes had: two results that must hold the same numbers."""
    from reports.jobs import threads_per_job

    parallel = entry(run + ["--jobs", "2", "--out", str(out / "parallel")])
    printed = capsys.readouterr().out.splitlines()
    with torch_threads(threads_per_job(2)):
        alone = entry(run + ["--jobs", "1", "--out", str(out / "alone")])
    return parallel, printed, alone


def crash_once(monkeypatch, when):
    """engine.train_one_epoch raises (as a kill -9 would stop the run) the first time ``when(epoch, phase)``."""
    from training import engine

    real, crashed = engine.train_one_epoch, []

    def crashing(*args, epoch, phase, **kwargs):
        if not crashed and when(epoch, phase):
            crashed.append(epoch)
            raise RuntimeError("killed")
        return real(*args, epoch=epoch, phase=phase, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", crashing)


def sigterm_group_at(process, line_prefix: str) -> str:
    """Read ``process``'s stdout until a line starts with ``line_prefix``, then SIGTERM its whole
    process group (it must have been started with ``start_new_session=True``); returns its stderr."""
    for line in process.stdout:
        if line.startswith(line_prefix):
            os.killpg(process.pid, signal.SIGTERM)
            break
    return process.communicate(timeout=300)[1]


# Modules whose tests train networks end to end (or start processes that do): the bulk of the suite's
# 7-10 minutes. `scripts/test.sh -m "not slow"` runs the rest, the unit tests, for day-to-day work;
# CI (.ci/run) runs everything.
SLOW_MODULES = {"test_baselines", "test_compare", "test_compare_fair", "test_compare_jobs", "test_ddp_amp_compile",
                "test_distributed", "test_evolution", "test_evolution_parallel", "test_fashion_and_splits",
                "test_fuse_cli", "test_imagenet", "test_main", "test_new_user", "test_nws_cli", "test_operators",
                "test_robustness", "test_runlock", "test_systems"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains networks end to end; deselect with -m 'not slow'")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)

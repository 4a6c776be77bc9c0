"""``nws.py pretrain``: train an NWS network on the source data set while EMA k-means learns every layer's pool.

The run (``training.run.Run``) claims ``<save_path>/<dataset>/pools/seed_<seed>``, continues its
``checkpoint.pth`` with ``--resume``, and writes ``pools.pth`` (``pools.pools_state``) once the epochs are trained.
"""

from __future__ import annotations

import argparse
import os

from models.nws import build_network
from training import checkpoint, runtime
from training.run import Run
from training.training_state import seed_everything

from .cli import PRETRAIN_FIELDS
from .from_args import loops, network_config, recipe
from .pools import POOLS_NAME, PoolLearner, pools_state, read_pools
from .protocol import Training

PRETRAIN_KIND = checkpoint.register_kind("nws_pretrain", "a Neural Weight Search pretraining checkpoint (written by "
                                        "nws.py pretrain)", lambda state: "pool_learner" in state)


def pretrain(args: argparse.Namespace) -> dict:
    """Train the source network for ``--epochs`` (from its checkpoint with ``--resume``), then write its pools."""
    with runtime.session(args) as (ctx, stop):
        run = Run(args, ctx, kind=PRETRAIN_KIND, fields=PRETRAIN_FIELDS)  # claimed before the data loads
        data = runtime.load_data(args, ctx)
        config = network_config(args, data.num_classes)
        pools_path = run.path(POOLS_NAME)
        saved = run.resumed
        if saved is not None and not saved.get("partial") and saved["epoch"] + 1 >= args.epochs \
                and os.path.isfile(pools_path):  # the pools, not a JSON report, say the run is finished
            runtime.say_finished(ctx, run.run_dir, f"its {args.epochs} epochs trained and {POOLS_NAME} written")
            return {"run_dir": run.run_dir, "pools": pools_path,
                    **read_pools(pools_path, flag="the run's pools")["source"]}
        seed_everything(args.manualSeed)
        model = build_network(config).to(ctx.device)
        learner = PoolLearner(model, args.decay, args.kmeans_eps)
        training = Training(model, data.train_set, data.val_set if data.val_set is not None else data.test_set,
                            recipe(args), loops(args, ctx), seed=args.manualSeed, phase="pretrain", epoch_offset=0,
                            nws=True, run=run, test_every=args.test_every, split=data.selection_split,
                            extra_state=lambda: {"args": checkpoint.args_to_dict(args),
                                                 "pool_learner": learner.state_dict()})
        if saved is not None:
            training.resume(saved)
            learner.load_state_dict(saved["pool_learner"])
        run.open(continue_at=training.start_epoch, resumed_line=training.resumed_at())
        ctx.logger.info(f"pretraining the pools of {config.arch} (gs {config.group_size}, n_emb {config.pool_size}) "
                        f"on {args.dataset} for {args.epochs} epochs in {run.run_dir}")
        training.stop = stop.install()
        try:
            training.fit()
        finally:
            stop.restore()  # from here a Ctrl-C stops at once: the pools are written in a moment
        learner.remove()
        source = {"dataset": args.dataset, "epochs": args.epochs, "seed": args.manualSeed,
                  "train_subset": args.train_subset, "top1": training.last_measured()}
        run.save(POOLS_NAME, pools_state(model, config, source))
        ctx.logger.info(pools_written(pools_path, args.epochs, training.rows, data.selection_split))
        return {"run_dir": run.run_dir, "pools": pools_path, **source}


def pools_written(path: str, epochs: int, rows: list[dict], split: str) -> str:
    """The log line of a pools file: which epoch's pools it holds and why, and what the source network scored.

    The pools are the EMA k-means state, which follows the network's weights at every step; only the newest
    exists (none is kept per epoch to choose from), so the file holds the last epoch's. The network's
    accuracy says how well that source was learned; its best epoch is named when it was another one.
    """
    if not epochs:
        return f"pools written to {path}: untrained (--epochs 0), as initialised"
    line = (f"pools written to {path}: those of the last epoch, {epochs - 1} (the k-means pools follow the "
            "network at every step; only the newest exist, none is chosen by accuracy)")
    key = f"{split}_top1"
    measured = [row for row in rows if key in row]
    if not measured:  # --test_every 0
        return line
    last, best = measured[-1], max(measured, key=lambda row: row[key])
    line += f"; source network {split} top-1 {last[key]:.2f}% at epoch {last['epoch']}"
    if best[key] > last[key]:
        line += f" (its best, {best[key]:.2f}%, at epoch {best['epoch']}: not the network these pools come from)"
    return line

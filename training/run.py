"""The run lifecycle every system shares: a system contributes its state and its stages, never the trip.

    with runtime.session(args) as (ctx, stop):
        run = Run(args, ctx, kind=FUSE_KIND, fields=RUN_FIELDS)   # folder claimed and locked, checkpoint found
        if run.finished_before(ended=..., what="fused and tested"):
            return run.report_of_finished                         # opened again: nothing written
        seed_everything(args.manualSeed); data = runtime.load_data(args, ctx)
        run.open()                                                # args.json once, "resumed from", the folder line
        ...stages, each ``run.save(...)``-ing its checkpoint...
        run.write_json("summary.json", rows)

``Run`` is the one place that claims the folder (before anything is loaded), resumes by kind with the
compatibility check (``--resume PATH`` or ``auto``), says a finished run is finished, opens the folder's log,
writes ``args.json`` once, and writes files on the main process only (checkpoints atomically, with the
previous one kept). ``Ledger`` is the one record of a run's stages: those done and the one in flight, saved
in its checkpoint; a resumed run skips what is done. The training state inside a checkpoint (optimizer by
parameter name, scaler, random generators) is ``training_state``'s; the epoch loop, ``engine.fit``.
"""

from __future__ import annotations

import argparse
import json
import os

from training import checkpoint, runtime, wait_policy
from training.runtime import Context
from utils import atomic_write_text

ARGS_NAME = "args.json"
SUMMARY_NAME = "summary.json"


class Run:
    """One run's folder, its checkpoint to continue from (``resumed``, or None) and what it writes there."""

    def __init__(self, args: argparse.Namespace, ctx: Context, *, kind: str, fields: tuple[str, ...] = (),
                 newer: dict | None = None) -> None:
        """Claim and lock the run folder (nothing else is written before ``open``), then find the checkpoint to
        continue from: of ``kind``, its ``fields`` flags equal to this run's (``newer``: flags a checkpoint may
        predate, with the values it was made with)."""
        self.args, self.ctx = args, ctx
        self.run_dir = runtime.claim_run_folder(args, ctx)
        self.kind = kind
        self.report_of_finished = None
        self.resume_path, self.resumed = self.find_resume(kind, fields, newer or {})

    def find_resume(self, kind: str, fields: tuple[str, ...], newer: dict) -> tuple[str | None, dict | None]:
        """(path, state) of ``--resume PATH`` or ``--resume auto`` (the newest whole checkpoint of the folder,
        each damaged one skipped said once the folder opens), checked to be of ``kind`` and to fit; else None."""
        args = self.args
        path = (checkpoint.latest_checkpoint(self.run_dir, self.ctx.notes.append) if args.resume == "auto"
                else (args.resume or None))
        if path is None:
            return None, None
        state = checkpoint.load_checkpoint(path)
        checkpoint.require_kind(state, path, (kind,))  # names the program that wrote another kind
        requested = checkpoint.args_to_dict(args)
        checkpoint.check_compatible(state["args"], requested, fields)
        if newer:  # flags newer than some checkpoints: one without them was made with these values
            checkpoint.check_compatible({**newer, **state["args"]}, requested, tuple(newer))
        return path, state

    def finished_before(self, ended: bool, what: str, report: str = SUMMARY_NAME) -> bool:
        """True when the checkpoint says the run ``ended`` and its ``report`` (a JSON file, written last) is
        there: a finished run opened again, and ``--resume auto`` has nothing to do (``report_of_finished``
        holds the report); it says so (``what``: what the run did) and changes nothing on disk."""
        path = self.path(report)
        if not ended or not os.path.isfile(path):
            return False
        with open(path) as handle:
            self.report_of_finished = json.load(handle)
        runtime.say_finished(self.ctx, self.run_dir, what)
        return True

    def open(self, *, needed_bytes: int = 0, continue_at: int | None = None, resumed_line: str | None = None,
             folder_note: str = "", write_args: bool | None = None, continues: bool | None = None) -> None:
        """Log into the folder (``needed_bytes``: checkpoint space it must have). A resumed run drops the metrics
        rows at and after ``continue_at`` and logs ``resumed_line``; a new one (or ``write_args``) writes
        args.json. Then the line naming the folder, the device and the processes (+ ``folder_note``).
        ``continues``: whether the run goes on from what one before it left (default: a checkpoint was found to
        resume), said by a system whose stages done are files of their own rather than its checkpoint."""
        resumed = self.resumed is not None if continues is None else continues
        runtime.open_run_folder(self.args, self.ctx, self.run_dir, needed_bytes=needed_bytes, resumed=resumed)
        log = self.ctx.logger
        if resumed and continue_at is not None:
            log.continue_at(continue_at)
        if resumed and resumed_line:
            log.info(f"resumed from {self.resume_path}: {resumed_line}")
        if write_args if write_args is not None else not resumed:
            self.write_args()
        log.info(f"run folder: {os.path.abspath(self.run_dir)}  device: {self.ctx.device}  "
                 f"processes: {self.ctx.dist.world_size}{folder_note}"
                 + (f"  {wait_policy.describe()}" if self.ctx.device.type == "cpu" else ""))

    def write_args(self) -> None:
        """args.json: the whole command line as plain values (also the TensorBoard text "args")."""
        text = json.dumps(checkpoint.args_to_dict(self.args), indent=1)
        self.ctx.logger.log_text("args", text)
        if self.ctx.main_process:
            atomic_write_text(self.path(ARGS_NAME), text)

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def save(self, name: str, state: dict) -> None:
        """A checkpoint file of the run, on the main process: of this run's kind unless ``state`` names its own;
        ``checkpoint.pth`` keeps the one it replaces (``checkpoint_prev.pth``)."""
        if self.ctx.main_process:
            checkpoint.save_checkpoint({"kind": self.kind, **state}, self.path(name),
                                       keep_previous=name == checkpoint.LATEST_NAME)

    def write_json(self, name: str, value, indent: int = 1) -> None:
        """A JSON report of the run (summary.json, ...), on the main process, written whole or not at all."""
        if self.ctx.main_process:
            atomic_write_text(self.path(name), json.dumps(value, indent=indent))


class Ledger:
    """The stages of a run: those done, in order, and the one in flight. Saved in the run's checkpoint
    (``state()``) and read back (``Ledger(saved)``), so a resumed run skips what is done and continues
    the stage it was in."""

    def __init__(self, saved: dict | None = None) -> None:
        saved = saved or {}
        self.done: list[str] = list(saved.get("done", []))
        self.in_flight: str | None = saved.get("in_flight")

    def is_done(self, stage: str) -> bool:
        return stage in self.done

    def begin(self, stage: str) -> None:
        self.in_flight = stage

    def finish(self, stage: str) -> None:
        if stage not in self.done:
            self.done.append(stage)
        self.in_flight = None

    def state(self) -> dict:
        return {"done": list(self.done), "in_flight": self.in_flight}

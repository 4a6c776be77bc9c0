"""Model fusion CLI: k trained networks become one network of a member's size, then fine-tune it.

``get_args_parser()`` returns the parser; ``main(args)`` runs a fusion: get the members (from
checkpoints written by main.py or by this script, or train ``--train_members`` of them here),
fuse them with ``--method`` (the algorithms are in ``fusion/``), fine-tune the fused network
with the authors' recipe, select the fine-tuning epoch on the validation split, and test every
network of the summary once at the end. Nothing runs at import time.

    python fuse.py --dataset digits --ngpu 0 --train_members 2 --arch wrn --depth 10 --wide 1 \\
        --member_epochs 3 --method nt --finetune_epochs 3
    python fuse.py DATA_PATH --dataset cifar100 --checkpoints a/best.pth b/best.pth --method nt
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before torch loads: a Ctrl-C during the imports ends in one sentence
    import sys

    from training.entry import run_script

    sys.exit(run_script("fuse.py", "fuse"))

import argparse
import copy
import json
import math
import os
import time

from training import flags
from training import runtime
from utils import ConfigError

METHODS = ("nt", "nt_iterative", "nt_hierarchical", "average", "ot", "ensemble", "best_member")
ARCHS = ("wrn", "resnet18", "mlp")
FUSED_NAME = "fused.pth"
FUSED_INITIAL_NAME = "fused_initial.pth"  # right after fusion, before fine-tuning
FUSED_RECALIBRATED_NAME = "fused_recalibrated.pth"  # the same with re-estimated BatchNorm statistics
BEST_NAME = "best.pth"  # the fine-tuning epoch with the best validation top-1 so far
MAX_MEMBERS = 64  # fusion holds every member and their k-times-wide concatenation at once
EXAMPLE_INPUTS = 2  # images (zeros) that torch-pruning traces the network with; only their shape matters

# The flags that decide what a run computes: resuming with any of them changed is refused.
RUN_FIELDS = ("dataset", "val_split", "train_subset", "batch_size", "checkpoints", "train_members", "arch", "depth",
              "wide", "use_bn", "resnet_width", "hidden", "member_epochs", "member_lr", "member_momentum",
              "member_weight_decay", "member_seeds", "method", "recalibrate_bn", "finetune_epochs", "finetune_steps",
              "finetune_lr", "finetune_momentum",
              "finetune_weight_decay", "finetune_milestones", "finetune_gamma")


def get_args_parser() -> argparse.ArgumentParser:
    parser = runtime.new_parser("Model fusion (Neuron Transplantation and baselines): fuse k trained networks into "
                                "one of a member's size, fine-tune it, select on a validation split, test once.")
    runtime.add_run_arguments(parser)
    parser.set_defaults(tag="fuse", val_split=0.1, batch_size=256)

    g = parser.add_argument_group("Members (give --checkpoints, or train them with --train_members)")
    g.add_argument("--checkpoints", nargs="+", default=None, metavar="PATH",
                   help="checkpoints of the networks to fuse (main.py's or this script's); a pre-growth "
                        "MixtureGrowth checkpoint gives its trained members (models.materialize), a grown one "
                        "its grown network")
    flags.add(g, "--train_members", flags.count(min=0, high=MAX_MEMBERS, checked_by="fuse.validate_args"), default=0,
              help="train this many members here, each from its own seed, instead of --checkpoints "
                   "(0 = use --checkpoints; otherwise at least 2)")
    g.add_argument("--arch", default="wrn", choices=ARCHS,
                   help="--train_members: plain Wide-ResNet (--depth, --wide), CIFAR ResNet-18 (--resnet_width) or "
                        "MLP (--hidden)")
    flags.add(g, "--depth", flags.count(min=10), default=16,
              help="--arch wrn: depth in layers, 6n+4 (10, 16, 22, 28, ...)")
    flags.add(g, "--wide", flags.number(low=0.0, low_open=True), default=4,
              help="--arch wrn: width factor of a member (stage widths 16k, 32k, 64k channels)")
    g.add_argument("--use_bn", action="store_true", help="--arch wrn: a BatchNorm between the two convs of a block")
    flags.add(g, "--resnet_width", flags.count(min=1), default=64,
              help="--arch resnet18: channels of the first stage; the stages have w, 2w, 4w, 8w")
    flags.add(g, "--hidden", flags.numbers(flags.count(min=1)), default=[512, 512],
              help="--arch mlp: hidden widths in neurons, comma-separated")
    flags.add(g, "--member_seeds", flags.numbers(flags.count(min=0)), default=[],
              help="--train_members: the seed of each member (its weights and data order), comma-separated, one "
                   "per member, e.g. 21,22 to match runs of main.py --manualSeed 21 and 22; empty = member i gets "
                   "--manualSeed + 1000 (i + 1)")
    flags.add(g, "--member_epochs", flags.count(min=1), default=30, help="--train_members: epochs per member")
    flags.add(g, "--member_lr", flags.number(low=0.0, low_open=True, warn_above=1.0), default=0.05,
              help="--train_members: peak SGD learning rate of a per-epoch cosine decay to 0")
    flags.add(g, "--member_momentum", flags.number(low=0.0, high=1.0, high_open=True), default=0.9,
              help="--train_members: SGD momentum")
    flags.add(g, "--member_weight_decay", flags.number(low=0.0, warn_above=0.1), default=5e-4,
              help="--train_members: SGD weight decay (L2 coefficient)")

    g = parser.add_argument_group("Fusion")
    g.add_argument("--method", default="nt", choices=METHODS,
                   help="nt: Neuron Transplantation (concatenate, prune 1-1/k per layer with torch-pruning); "
                        "nt_iterative / nt_hierarchical: pair-wise NT, running / merge-sort order; average: weight "
                        "averaging; ot: optimal-transport alignment (POT) then average; ensemble: the "
                        "concatenated network (k times wide, the members' averaged logits, not fine-tuned); "
                        "best_member: the member best on the validation split (fine-tuned like the fused "
                        "network: the control with the same budget and recipe; with one --checkpoints: that "
                        "network fine-tuned alone)")
    flags.add(g, "--recalibrate_bn", flags.count(min=0), default=0,
              help="re-estimate the BatchNorm statistics of the network before fine-tuning from this many "
                   "training batches (engine.recalibrate_batchnorm, as main.py --recalibrate_bn: train-mode "
                   "forward, no gradients, cumulative average); the summary reports it raw and recalibrated, "
                   "fine-tuning starts from the recalibrated one; not for --method ensemble; 0 = off")

    g = parser.add_argument_group("Fine-tuning (defaults: the authors' recipe; ResNet-18: --finetune_lr 0.1 "
                                  "--finetune_weight_decay 1e-4 --finetune_epochs 100 --finetune_milestones 50,80)")
    flags.add(g, "--finetune_epochs", flags.count(min=0), default=30,
              help="epochs of fine-tuning the fused network (0 = keep it as fused)")
    flags.add(g, "--finetune_steps", flags.count(min=0), default=0,
              help="fine-tune for exactly this many SGD steps (batches) instead of --finetune_epochs: whole epochs, "
                   "then the first batches of one more; a budget in training FLOPs is steps x batch images "
                   "(systems.py sets it; 0 = --finetune_epochs whole epochs)")
    flags.add(g, "--finetune_lr", flags.number(low=0.0, low_open=True, warn_above=1.0), default=0.01,
              help="SGD learning rate, constant unless --finetune_milestones")
    flags.add(g, "--finetune_momentum", flags.number(low=0.0, high=1.0, high_open=True), default=0.9,
              help="SGD momentum")
    flags.add(g, "--finetune_weight_decay", flags.number(low=0.0, warn_above=0.1), default=0.0,
              help="SGD weight decay (L2 coefficient)")
    flags.add(g, "--finetune_milestones", flags.numbers(flags.count(min=1, checked_by="fuse.validate_args")),
              default=[], help="epochs (comma-separated, increasing, below --finetune_epochs) at which the lr is "
                               "multiplied by --finetune_gamma; empty = constant lr")
    flags.add(g, "--finetune_gamma", flags.number(low=0.0, high=1.0, low_open=True), default=0.1,
              help="lr factor at each milestone")
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """Every check that needs no data and no network, so a mistake fails before anything is read or written."""
    if bool(args.checkpoints) == bool(args.train_members):
        raise ConfigError("give the networks to fuse either as --checkpoints PATH PATH ... or as --train_members K")
    if args.checkpoints:
        for path in args.checkpoints:
            if not os.path.isfile(path):
                raise ConfigError(f"--checkpoints: no checkpoint at {os.path.abspath(path)}")
    if args.train_members == 1:
        raise ConfigError("--train_members must be at least 2 (fusion needs two networks), got 1")
    if args.member_seeds and len(args.member_seeds) != args.train_members:
        raise ConfigError(f"--member_seeds must give one seed per member of --train_members {args.train_members}, "
                          f"got {len(args.member_seeds)}: {','.join(map(str, args.member_seeds))}")
    if args.recalibrate_bn and args.method == "ensemble":
        raise ConfigError("--recalibrate_bn does not apply to --method ensemble (its BatchNorms are the members' "
                          "own); use it with a method that makes a new network")
    milestones = args.finetune_milestones
    if milestones and args.finetune_steps:
        raise ConfigError("--finetune_milestones are epochs of --finetune_epochs: not with --finetune_steps")
    if milestones != sorted(set(milestones)) or any(not 1 <= m < args.finetune_epochs for m in milestones):
        raise ConfigError("--finetune_milestones must be increasing epochs in [1, --finetune_epochs), got "
                          f"{','.join(map(str, milestones))}")
    if not args.hidden:
        raise ConfigError("--hidden must list at least one width")
    selects = args.method == "best_member" or (fine_tunes(args) and args.method != "ensemble")
    if selects and args.val_split == 0:
        raise ConfigError("--val_split must be above 0: the best member and the fine-tuning epoch are chosen on a "
                          "held-out validation split, never on the test set")
    if args.resume and args.resume != "auto" and not os.path.isfile(args.resume):
        raise ConfigError(f"--resume: no checkpoint at {os.path.abspath(args.resume)}")


def fine_tunes(args: argparse.Namespace) -> bool:
    return args.finetune_epochs > 0 or args.finetune_steps > 0


def cli(argv: list[str] | None = None) -> int:
    """``python fuse.py``: parse, run, and turn expected failures into one sentence and an exit status."""
    return runtime.cli("fuse.py", get_args_parser, main, argv)


def main(args: argparse.Namespace) -> dict:
    """Run (or continue) the fusion ``args`` describes; returns the summary rows and the run folder."""
    validate_args(args)
    with runtime.session(args) as (ctx, stop):
        run = FusionRun(args, ctx)
        if run.finished_report is not None:
            runtime.say_finished(ctx, run.run_dir, "fused, fine-tuned and tested; summary.json written")
            return {"summary": run.finished_report, "run_dir": run.run_dir}
        stop.install()
        return run.execute(stop)


# --------------------------------------------------------------------------- networks


def member_network(args: argparse.Namespace, num_classes: int, input_size: tuple[int, int, int]):
    """A fresh member for ``--train_members`` (plain network of ``--arch``)."""
    from models.layers import PlainLayers
    from models.mlp import mlp_for_images
    from models.resnet18 import ResNet18
    from models.wrn import WideResNet, wrn_channels

    if args.arch == "wrn":
        return WideResNet(args.depth, wrn_channels(args.wide), num_classes, PlainLayers(), use_bn=args.use_bn)
    if args.arch == "resnet18":
        w = args.resnet_width
        return ResNet18(num_classes, widths=(w, 2 * w, 4 * w, 8 * w), in_channels=input_size[0])
    return mlp_for_images(input_size, tuple(args.hidden), num_classes)


def networks_from_checkpoint(path: str) -> tuple[list, dict]:
    """The networks a checkpoint holds, on the CPU, and the checkpoint.

    A plain network (any registered model kind) is one network; a template-mixed MixtureGrowth
    network is rebuilt as main.py does and its trained members are taken out as plain networks
    (member 0 only while member 1 had not started; the grown network once grown).
    """
    from training import checkpoint
    import main as mixturegrowth
    import models
    import models.mlp  # noqa: F401  (registers the model kind "mlp", which models/__init__ does not import)

    state = checkpoint.load_checkpoint(path, flag="--checkpoints")
    if not isinstance(state.get("model"), dict) or not isinstance(state.get("args", {}), dict):
        raise ConfigError(f"--checkpoints: {os.path.abspath(path)} holds no network (no model weights)")
    try:
        network = mixturegrowth.restore_model(state.get("args", {}), state, "cpu")
    except ConfigError:
        raise
    except Exception as error:  # a state dict that does not fit the network its checkpoint describes
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise ConfigError(f"--checkpoints: {os.path.abspath(path)} does not hold a network this code can rebuild "
                          f"({reason})") from None
    if not models.is_template_model(network):
        return [network], state
    if state.get("grown"):
        return [models.materialize(network, None)], state
    trained = (0,) if state.get("phase") == "member_0" else (0, 1)
    return [models.materialize(network, member) for member in trained], state


def check_members_learned(members: list, member_val: list[dict], num_classes: int, log) -> None:
    """Stop before fusing a member that diverged: the fused network would inherit its NaNs.

    Non-finite weights, BatchNorm statistics or validation loss stop the run as a non-finite loss
    does (exit 3). A validation top-1 no better than chance (100 / classes %) is said in the log
    but fused: a short smoke run's members legitimately sit there.
    """
    import torch

    from training import engine

    chance = 100.0 / num_classes
    for index, (network, val) in enumerate(zip(members, member_val)):
        if not all(torch.isfinite(t).all() for t in network.state_dict().values() if t.is_floating_point()):
            broken = "its weights or BatchNorm statistics are"
        elif val["loss"] is not None and not math.isfinite(val["loss"]):
            broken = f"its validation loss is {val['loss']}, which is"
        else:
            if val["top1"] is not None and val["top1"] <= chance:
                log.info(f"warning: member {index} is no better than chance on the validation split "
                         f"({val['top1']:.2f}% top-1, chance {chance:.2f}%); fusing it anyway")
            continue
        raise engine.NonFiniteLossError(f"member {index} diverged: {broken} not finite, so it cannot be fused "
                                        "(lower --member_lr, or give other --checkpoints)")


def size_of(network, input_size) -> dict:
    """Parameters and FLOPs per image (``compute_flops``) of a plain network."""
    from compute_flops import count_flops, count_parameters

    return {"params": count_parameters(network), "flops": count_flops(network, input_size)}


class Training:
    """One training of a fusion run (a member, or the fine-tuning): the hooks ``engine.fit`` runs.

    Every epoch is checkpointed (``checkpoint.pth``: the training in progress and what is done); the
    fine-tuning (``select``) also keeps the epoch with the best validation top-1 as ``best.pth``.
    """

    def __init__(self, run, network, optimizer, loader, stop, *, phase: str, name: str, epochs: int, lr_of,
                 select: bool, max_steps: int | None) -> None:
        self.run, self.network, self.optimizer, self.loader = run, network, optimizer, loader
        self.phase, self.name, self.epochs, self.lr_of = phase, name, epochs, lr_of
        self.select, self.max_steps = select, max_steps
        self.ctx, self.run_dir, self.stop = run.ctx, run.run_dir, stop
        self.net = runtime.wrap_for_training(network, run.ctx)
        self.per_epoch = len(loader)  # steps of a whole epoch (a resumed one skips its first steps)

    def begin_epoch(self, epoch: int):
        from training import engine

        args = self.run.args
        steps = None if self.max_steps is None else min(self.per_epoch, self.max_steps - epoch * self.per_epoch)
        return engine.EpochSpec(net=self.net, model=self.network, optimizer=self.optimizer, loader=self.loader,
                                phase=self.phase, batch_size=args.batch_size, lr=self.lr_of(epoch), steps=steps,
                                row_epoch=self.run.record["epoch"] + 1, amp=args.amp,
                                batch_transform=self.run.data.train_transform, row={"phase_epoch": epoch})

    def checkpoint(self, epoch: int, spec, partial: dict | None) -> None:
        if partial is not None:  # between epochs, end_epoch has written it
            self.run.checkpoint_progress({"training": self.name, "training_epoch": epoch, "network": self.network,
                                          "optimizer": self.optimizer, "partial": partial})

    def evaluate(self, epoch: int, spec):
        return None if self.run.data.val_loader is None else ("val", self.run.evaluate(self.network, "val"))

    def end_epoch(self, epoch: int, spec, row: dict) -> None:
        from training import distributed

        run, record = self.run, self.run.record
        record["epoch"] += 1
        record["history"].append(row)
        if self.select and row.get("val_top1") is not None and (record["best_val"] is None
                                                                 or row["val_top1"] > record["best_val"]):
            record.update(best_val=row["val_top1"], best_epoch=epoch)
            run.save(BEST_NAME, run.network_state(self.network, phase="finetune", epoch=record["epoch"],
                                                  finetune_epoch=epoch))
        more = epoch + 1 < self.epochs
        run.checkpoint_progress({"training": self.name, "training_epoch": epoch + 1, "network": self.network,
                                 "optimizer": self.optimizer} if more else None)
        distributed.barrier()


# --------------------------------------------------------------------------- the run


class FusionRun:
    """One fusion run: its folder, data, members, the fused network and its fine-tuning.

    ``checkpoint.pth`` holds the training in progress (a member, or the fine-tuning) and what
    is done; a SIGTERM in the middle of an epoch writes it with the step reached and raises
    ``runtime.Preempted``; ``--resume auto`` continues exactly there.
    """

    def __init__(self, args: argparse.Namespace, ctx: runtime.Context) -> None:
        from training import checkpoint
        from utils import seed_everything

        self.args, self.ctx = args, ctx
        self.run_dir = runtime.claim_run_folder(args, ctx)  # locked before the data loads
        self.resume_path, self.resumed = self.find_resume()
        self.finished_report = runtime.finished_report(
            self.run_dir, ended=self.resumed is not None and self.resumed["record"]["stage"] == "done")
        if self.finished_report is not None:  # opened again after it ended: nothing is loaded, nothing written
            return
        seed_everything(args.manualSeed)
        self.given = [networks_from_checkpoint(path) for path in args.checkpoints or []]
        for path, (_, state) in zip(args.checkpoints or [], self.given):
            trained_on = state.get("args", {}).get("dataset")
            if trained_on is not None and trained_on != args.dataset:
                raise ConfigError(f"--checkpoints: {os.path.abspath(path)} was trained on {trained_on}, "
                                  f"but --dataset is {args.dataset}")
        self.data = runtime.load_data(args, ctx)
        if args.train_members:
            runtime.check_network_fits(lambda: member_network(args, self.data.num_classes, self.data.input_size), args,
                                       f"--arch {args.arch}'s size (--wide, --resnet_width or --hidden)")
        else:
            import fusion

            networks = [net for nets, _ in self.given for net in nets]
            if len(networks) > 1 or args.method != "best_member":  # one network: fine-tuned alone
                fusion.check_members(networks, f"--method {args.method}" if len(networks) > 1 else "fusion")
            classes = fusion.describe(networks[0])[1]["num_classes"]
            if classes != self.data.num_classes:
                raise ConfigError(f"--checkpoints: the networks predict {classes} classes, but --dataset "
                                  f"{args.dataset} has {self.data.num_classes}")
        runtime.open_run_folder(args, ctx, self.run_dir, resumed=self.resumed is not None)
        self.log = ctx.logger
        self.record = {"history": [], "epoch": -1, "fusion_seconds": None, "members_trained": 0,
                       "best_val": None, "best_epoch": None, "stage": "members"}
        if self.resumed is not None:
            self.record.update(self.resumed["record"])
            self.log.continue_at(self.record["epoch"] + 1)
            self.log.info(f"resumed from {self.resume_path}: stage {self.record['stage']}")
        else:
            args_text = json.dumps(checkpoint.args_to_dict(args), indent=1)
            self.log.log_text("args", args_text)
            if ctx.main_process:
                from utils import atomic_write_text

                atomic_write_text(os.path.join(self.run_dir, "args.json"), args_text)
        self.log.info(f"run folder: {os.path.abspath(self.run_dir)}  device: {ctx.device}  "
                      f"processes: {ctx.dist.world_size}")

    def find_resume(self) -> tuple[str | None, dict | None]:
        from training import checkpoint

        args = self.args
        path = (checkpoint.latest_checkpoint(self.run_dir, self.ctx.notes.append) if args.resume == "auto"
                else (args.resume or None))
        if path is None:
            return None, None
        state = checkpoint.load_checkpoint(path)
        checkpoint.require_kind(state, path, ("fuse",))  # names the program that wrote it
        checkpoint.check_compatible(state["args"], checkpoint.args_to_dict(args), RUN_FIELDS)
        return path, state

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def save(self, name: str, state: dict) -> None:
        from training import checkpoint

        if self.ctx.main_process:
            checkpoint.save_checkpoint(state, self.path(name), keep_previous=name == checkpoint.LATEST_NAME)

    def network_state(self, network, **extra) -> dict:
        """A checkpoint of one network that main.py --evaluate and --checkpoints rebuild from its config."""
        from training import checkpoint
        import models

        kind, config = models.model_config(network)
        return {"args": checkpoint.args_to_dict(self.args), "model_kind": kind, "model_config": config,
                "model": network.state_dict(), "grown": False, **extra}

    def load_network(self, name: str):
        from training import checkpoint
        import models
        import models.mlp  # noqa: F401  (registers the model kind "mlp")

        state = checkpoint.load_checkpoint(self.path(name), flag="--resume")
        network = models.build_from_config(state["model_kind"], state["model_config"])
        network.load_state_dict(state["model"])
        return network.to(self.ctx.device), state

    # ------------------------------------------------------------------ stages

    def execute(self, stop) -> dict:
        args, log = self.args, self.log
        if self.record["stage"] == "done":
            log.info(f"this run is complete: {os.path.abspath(self.path(FUSED_NAME))}")
            with open(self.path("summary.json")) as handle:
                return {"summary": json.load(handle), "run_dir": self.run_dir}
        members = self.members(stop)
        member_val = [self.evaluate(net, "val") for net in members]
        for index, result in enumerate(member_val):
            if result["top1"] is not None:
                log.info(f"member {index}: val top-1 {result['top1']:.2f}%")
        if self.record["stage"] == "members":
            check_members_learned(members, member_val, self.data.num_classes, log)
            fused, seconds = self.fuse(members, member_val)
            self.save(FUSED_INITIAL_NAME, self.network_state(fused, phase="fused", epoch=self.record["epoch"],
                                                             fusion_seconds=seconds, method=args.method))
            initial = copy.deepcopy(fused)
            if args.recalibrate_bn:
                self.recalibrate(fused)
                self.save(FUSED_RECALIBRATED_NAME, self.network_state(fused, phase="fused", epoch=self.record["epoch"],
                                                                      method=args.method))
            self.record.update(stage="finetune", fusion_seconds=seconds)
            self.checkpoint_progress(None)
        else:
            initial, _ = self.load_network(FUSED_INITIAL_NAME)
            fused, _ = self.load_network(FUSED_RECALIBRATED_NAME if args.recalibrate_bn else FUSED_INITIAL_NAME)
        recalibrated = copy.deepcopy(fused) if args.recalibrate_bn else None
        fine_tuned = args.method != "ensemble" and fine_tunes(args)
        if fine_tuned:
            fused = self.finetune(fused, stop)
        self.record["stage"] = "done"
        return self.finish(members, member_val, initial, recalibrated, fused, fine_tuned)

    def members(self, stop) -> list:
        """The networks to fuse, on the device: given, or trained (and saved as member_<i>.pth) one by one."""
        if not self.args.train_members:
            return [net.to(self.ctx.device).eval() for nets, _ in self.given for net in nets]
        from utils import seed_everything

        members = []
        for index in range(self.args.train_members):
            name = f"member_{index}.pth"
            if index < self.record["members_trained"]:
                members.append(self.load_network(name)[0].eval())
                continue
            seed = self.member_seed(index)
            seed_everything(seed)  # member index's initial weights and data order
            network = member_network(self.args, self.data.num_classes, self.data.input_size).to(self.ctx.device)
            in_flight = self.resumed if self.resumed is not None and self.resumed.get("training") == name else None
            self.log.info(f"member {index}: training {self.args.member_epochs} epochs from seed {seed}")
            self.train(network, phase=f"member_{index}", name=name, epochs=self.args.member_epochs,
                       lr_of=self.member_lr, momentum=self.args.member_momentum,
                       weight_decay=self.args.member_weight_decay, seed=seed, stop=stop, resumed=in_flight)
            self.record["members_trained"] = index + 1
            self.save(name, self.network_state(network, phase=f"member_{index}", epoch=self.record["epoch"]))
            self.checkpoint_progress(None)
            members.append(network.eval())
        return members

    def member_seed(self, index: int) -> int:
        if self.args.member_seeds:
            return self.args.member_seeds[index]
        return self.args.manualSeed + 1000 * (index + 1)

    def member_lr(self, epoch: int) -> float:
        return 0.5 * self.args.member_lr * (1.0 + math.cos(math.pi * epoch / self.args.member_epochs))

    def finetune_lr(self, epoch: int) -> float:
        passed = sum(epoch >= m for m in self.args.finetune_milestones)
        return self.args.finetune_lr * self.args.finetune_gamma ** passed

    def fuse(self, members: list, member_val: list[dict]):
        """The fused network and the seconds fusion took (0 for best_member)."""
        import torch

        import fusion

        args = self.args
        if args.method == "best_member":
            best = max(range(len(members)), key=lambda i: (member_val[i]["top1"], -i))
            self.log.info(f"best member on the validation split: member {best} ({member_val[best]['top1']:.2f}%)")
            return copy.deepcopy(members[best]), 0.0
        device = self.ctx.device
        example_inputs = torch.zeros(EXAMPLE_INPUTS, *self.data.input_size, device=device)
        if args.method == "ot":
            import ot  # noqa: F401  (POT takes seconds to import: not part of the fusion's time)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fused = fusion.fuse(args.method, members, example_inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the clock stops when the work is done, not queued
        seconds = time.perf_counter() - start
        self.log.info(f"fused {len(members)} networks with --method {args.method} in {seconds:.3f} s")
        return fused, seconds

    def recalibrate(self, network) -> None:
        """Re-estimate ``network``'s BatchNorm statistics in place from ``--recalibrate_bn`` training batches."""
        from training import engine

        loader = self.data.train_loader(self.args.manualSeed)
        loader.sampler.set_epoch(0)
        batches = engine.recalibrate_batchnorm(network, loader, self.ctx.device, self.args.recalibrate_bn,
                                               amp=self.args.amp, batch_transform=self.data.train_transform)
        self.log.info(f"re-estimated the BatchNorm statistics of the {self.args.method} network from {batches} "
                      "training batches")

    def finetune(self, network, stop):
        """Fine-tune ``network``; returns it at the epoch with the best validation top-1."""
        args = self.args
        in_flight = self.resumed if self.resumed is not None and self.resumed.get("training") == "finetune" else None
        epochs, steps = args.finetune_epochs, args.finetune_steps or None
        if steps:
            epochs = math.ceil(steps / len(self.data.train_loader(args.manualSeed)))
        self.log.info(f"fine-tuning {epochs} epochs{f' ({steps} steps)' if steps else ''}: SGD lr {args.finetune_lr:g} "
                      f"momentum "
                      f"{args.finetune_momentum:g} weight decay {args.finetune_weight_decay:g}"
                      + (f", x{args.finetune_gamma:g} at {args.finetune_milestones}" if args.finetune_milestones
                         else ", constant lr"))
        self.train(network, phase="finetune", name="finetune", epochs=epochs, lr_of=self.finetune_lr,
                   momentum=args.finetune_momentum, weight_decay=args.finetune_weight_decay, seed=args.manualSeed,
                   stop=stop, resumed=in_flight, select=True, max_steps=steps)
        best, _ = self.load_network(BEST_NAME)
        self.log.info(f"selected fine-tuning epoch {self.record['best_epoch']} (val top-1 "
                      f"{self.record['best_val']:.2f}%)")
        return best

    def train(self, network, *, phase: str, name: str, epochs: int, lr_of, momentum: float, weight_decay: float,
              seed: int, stop, resumed: dict | None, select: bool = False, max_steps: int | None = None) -> None:
        """Train ``network`` in place for ``epochs`` (``engine.fit``), checkpointing every epoch; ``max_steps``:
        the last epoch stops once that many steps are done in all."""
        from training import engine
        from utils import set_rng_state

        optimizer = engine.build_optimizer(network, lr=lr_of(0), momentum=momentum, nesterov=False,
                                           weight_decay=weight_decay)
        start, partial = 0, None
        if resumed is not None:
            network.load_state_dict(resumed["model"])
            engine.load_optimizer_state_by_name(optimizer, network, resumed["optimizer"])
            if self.ctx.scaler is not None and resumed.get("scaler"):
                self.ctx.scaler.load_state_dict(resumed["scaler"])
            start, partial = resumed["training_epoch"], resumed.get("partial")
            set_rng_state(resumed["rng"])
        training = Training(self, network, optimizer, self.data.train_loader(seed), stop, phase=phase, name=name,
                            epochs=epochs, lr_of=lr_of, select=select, max_steps=max_steps)
        engine.fit(training, range(start, epochs), partial=partial)

    def checkpoint_progress(self, training: dict | None) -> None:
        """Write checkpoint.pth: what is done (``record``) and the training in progress, if any."""
        from training import checkpoint
        from training import engine
        from utils import rng_state

        state = {"args": checkpoint.args_to_dict(self.args), "epoch": self.record["epoch"], "record": self.record,
                 "rng": rng_state()}
        if training is not None:
            network = training.pop("network")
            state.update(training, model=network.state_dict(),
                         optimizer=engine.optimizer_state_by_name(training.pop("optimizer"), network),
                         scaler=self.ctx.scaler.state_dict() if self.ctx.scaler is not None else None)
        self.save(checkpoint.LATEST_NAME, state)

    def evaluate(self, network, split: str) -> dict:
        from training import engine

        loader = self.data.val_loader if split == "val" else self.data.test_loader
        if loader is None:
            return {"top1": None, "top5": None, "loss": None}
        return engine.evaluate(network, loader, self.ctx.device, (None,), amp=self.args.amp,
                               batch_transform=self.data.eval_transform)[None]

    # ------------------------------------------------------------------ report

    def finish(self, members: list, member_val: list[dict], initial, recalibrated, final, fine_tuned: bool) -> dict:
        """Test every network of the summary once, write fused.pth, summary.json and the accuracy plot."""
        import fusion
        from custom_log import format_table, humanize
        from reports.plots import plot_accuracy
        from utils import atomic_write_text

        args, input_size = self.args, self.data.input_size
        member_size = size_of(members[0], input_size)
        rows = [{"network": f"member {i}", **self.scores(net, val), **member_size, "role": "member", "member": i}
                for i, (net, val) in enumerate(zip(members, member_val))]
        rows.append({"network": f"ensemble of {len(members)}", **self.scores(fusion.Ensemble(members)),
                     "params": member_size["params"] * len(members), "flops": member_size["flops"] * len(members),
                     "role": "ensemble"})
        if args.method != "ensemble":
            seconds = self.record["fusion_seconds"] if args.method != "best_member" else None
            rows.append({"network": f"{args.method} before fine-tuning", **self.scores(initial),
                         **size_of(initial, input_size), "seconds": seconds, "role": "before_finetuning",
                         "bn_recalibrated": False})
        if recalibrated is not None:
            rows.append({"network": f"{args.method} before fine-tuning, BN recalibrated", **self.scores(recalibrated),
                         **size_of(recalibrated, input_size), "role": "before_finetuning", "bn_recalibrated": True})
        if fine_tuned:
            rows.append({"network": f"{args.method} after fine-tuning", **self.scores(final),
                         **size_of(final, input_size), "epoch": self.record["best_epoch"], "role": "after_finetuning"})
        table = format_table(rows, ["network", "val_top1", "test_top1", "params", "flops", "seconds", "epoch"],
                             formats={"params": humanize, "flops": humanize, "seconds": lambda s: f"{s:.3f}"})
        fused = fusion.concat(members) if args.method == "ensemble" else final
        self.save(FUSED_NAME, self.network_state(fused, phase="fused", epoch=self.record["epoch"], summary=rows,
                                                 method=args.method, fusion_seconds=self.record["fusion_seconds"]))
        self.checkpoint_progress(None)
        if self.ctx.main_process:
            atomic_write_text(self.path("summary.json"), json.dumps(rows, indent=1))
            plot = ""
            if self.record["history"]:
                plot = plot_accuracy(self.record["history"], self.path("accuracy.png"),
                                     title=f"{args.dataset} {args.tag} seed {args.manualSeed} ({args.method})")
            evaluate = ["python", "main.py", *([args.data_path] if args.data_path else []), "--dataset", args.dataset,
                        "--evaluate", "--resume", self.path(FUSED_NAME), "--ngpu", str(args.ngpu)]
            self.log.info(f"summary (val: the selection split; test: evaluated once, now):\n{table}\n"
                          f"fused network: {os.path.abspath(self.path(FUSED_NAME))}"
                          + (f"\naccuracy curves: {plot}" if plot else "")
                          + f"\nevaluate it with: {' '.join(evaluate)}")
        return {"summary": rows, "run_dir": self.run_dir}

    def scores(self, network, val: dict | None = None) -> dict:
        """Top-1 on the validation split (``val`` if already measured) and on the test set."""
        val = val or self.evaluate(network, "val")
        return {"val_top1": val["top1"], "test_top1": self.evaluate(network, "test")["top1"]}

"""MixtureGrowth training CLI.

``get_args_parser()`` returns the parser; ``main(args)`` runs a whole experiment
(member 0, member 1, growth, grown network) or an evaluation. Nothing runs at
import time.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import sys
import tempfile
import time

from utils import ConfigError, parse_list

DATASETS = ("cifar10", "cifar100", "imagenet", "digits")
ARCHS = ("wrn", "normalwrn", "wrn_imagenet", "wrn_imagenet_bank", "normal_wrn_imagenet")
PLAIN_ARCHS = ("normalwrn", "normal_wrn_imagenet")
COEF_GROWTH_MODES = ("orthogonal", "copy", "zero", "random", "none", "random_blocks")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="MixtureGrowth: grow a network by recombining learned templates.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("data_path", nargs="?", default=None, metavar="DATA_PATH",
                        help="folder holding the data set (not needed for --dataset digits)")

    g = parser.add_argument_group("Data and model")
    g.add_argument("--dataset", default="digits", choices=DATASETS,
                   help="data set; 'digits' is scikit-learn's bundled handwritten digits (no download)")
    g.add_argument("--arch", default="wrn", choices=ARCHS,
                   help="wrn: template-mixed Wide-ResNet; normalwrn: plain Wide-ResNet; wrn_imagenet / "
                        "normal_wrn_imagenet: template-mixed / plain ResNet-50-style bottleneck net; "
                        "wrn_imagenet_bank: wrn_imagenet with template banks shared across layers")
    g.add_argument("--depth", type=int, default=28,
                   help="Wide-ResNet depth, 6n+4; for the *_imagenet archs a bottleneck ResNet depth: "
                        "26, 38, 50, 101 or 152")
    g.add_argument("--wide", type=float, default=10,
                   help="Wide-ResNet width factor of the full (grown) network")
    g.add_argument("--use_bn", action="store_true",
                   help="add a BatchNorm between the two convs of a block (reference: off)")
    g.add_argument("--cutout", action="store_true", help="Cutout augmentation: one 16px hole")
    g.add_argument("--no_cifar_full", action="store_true",
                   help="hold out 10%% of the training set as validation instead of testing on the test set")

    g = parser.add_argument_group("Templates")
    g.add_argument("--template_size", type=parse_list(float, "--template_size"), default=[0.5, 0.5, 1.0],
                   help="width fraction of member 0, member 1 and the grown network, comma-separated")
    g.add_argument("--num_templates_each_set", type=parse_list(int, "--num_templates_each_set"),
                   default=[2, 2], help="templates in each template set, comma-separated (one entry per set)")
    g.add_argument("--member_template_sets", type=parse_list(int, "--member_template_sets"),
                   default=[0, 1, 0, 1],
                   help="template set used by each member (grid cell) of a layer, comma-separated")
    g.add_argument("--cross_layer_sharing", action="store_true",
                   help="the two convs of an equal-width block share one template bank (2x templates)")
    g.add_argument("--split_edge_layers", action="store_true",
                   help="the input conv and the classifier are plain weights split between the members "
                        "(one template per grid cell, fixed coefficients) instead of K templates per set: "
                        "the grown network then stores exactly the plain network's weights "
                        "(matters for 1000 classes: +8%% otherwise); always on for wrn_imagenet_bank")
    g.add_argument("--bank_group_size", type=int, default=2,
                   help="wrn_imagenet_bank: convs of one shape within a stage share a template bank this many "
                        "at a time (in build order); a bank of n layers holds n x --num_templates_each_set "
                        "templates per set")
    g.add_argument("--ensemble_growth_type", default="diag", choices=("diag",),
                   help="where members sit in the grown weight grid: diag = [[W0, W2], [W3, W1]]")

    g = parser.add_argument_group("Phases")
    g.add_argument("--epochs", type=int, default=440, help="total epochs of the run, all phases")
    g.add_argument("--growth_epochs", type=parse_list(int, "--growth_epochs"), default=[200],
                   help="epochs of member 0 before member 1 starts (growth happens after member 1); "
                        "-1 = no growth, train one plain network")
    g.add_argument("--ensemble_train_epochs", type=int, default=200,
                   help="epochs of member 1 before the grown network starts")
    g.add_argument("--train_both_members", action="store_true",
                   help="train members 0 and 1 together during member 1's phase")
    g.add_argument("--member_0_loss_weight", type=float, default=0.1,
                   help="member 0's loss is multiplied by this whenever it trains (reference behaviour)")
    g.add_argument("--resume_member_0", default=None, metavar="PATH",
                   help="load member 0 from a checkpoint of another run (its set-0 tensors)")
    g.add_argument("--resume_member_1", default=None, metavar="PATH",
                   help="load member 1 from a checkpoint of another run (its set-0 tensors)")
    g.add_argument("--data_growth", action="store_true",
                   help="train on a fixed random half of the data before growth, all of it after")
    g.add_argument("--copy_templates_and_bn_0_to_1", action="store_true",
                   help="start member 1 as a noisy copy of member 0's templates and BN")
    g.add_argument("--copy_templates_and_bn_0_to_1_noise", type=float, default=0.01,
                   help="std of the Gaussian noise added by --copy_templates_and_bn_0_to_1")
    g.add_argument("--scale_templates_and_coefs", action="store_true",
                   help="when member 1 starts, rescale set 0 templates and member 0 coefficients to set 1's norms")

    g = parser.add_argument_group("Growth")
    g.add_argument("--coefs_growing", default="orthogonal", choices=COEF_GROWTH_MODES,
                   help="initial value of the new coefficients at growth; random_blocks is the naive-growth "
                        "baseline: members 0 and 1 keep their blocks, every new off-diagonal block gets fresh "
                        "Kaiming-normal weights (no templates), and the run goes on with that plain network")
    g.add_argument("--coefs_noise_growing", type=float, default=1.0,
                   help="scale of the new coefficients / of the noise added to copied ones")
    g.add_argument("--add_extra_templates_growing", type=int, default=0,
                   help="extra Kaiming-initialised templates added to each set at growth")
    g.add_argument("--scale_templates_and_coefs_growing", action="store_true",
                   help="at growth, rescale set 0 templates and member 0 coefficients to set 1's norms")
    g.add_argument("--net2net_epoch", type=int, default=0,
                   help="Net2Net baseline (with --arch normalwrn --growth_epochs -1): train the plain network at "
                        "the member width (--wide x template_size[0]) and before this epoch widen it "
                        "function-preservingly (Net2WiderNet) to --wide; the lr follows the plain run's cosine "
                        "throughout; 0 = off")
    g.add_argument("--net2net_noise", type=float, default=0.0,
                   help="Net2Net: std of the symmetry-breaking Gaussian noise added to the widened weights, "
                        "relative to each layer's weight std (0 = exactly function-preserving)")
    g.add_argument("--lr_growing", type=float, default=1e-4, help="peak learning rate after growth")
    g.add_argument("--lr_growing_min", type=float, default=3e-5,
                   help="learning-rate floor of the post-growth cosine cycles")
    g.add_argument("--lr_warmup_growing", type=int, default=1,
                   help="warm-up epochs of each post-growth cosine cycle")
    g.add_argument("--reset_lr_scheduler_growing", default="4", choices=("1", "2", "3", "4", "5", "6", "none"),
                   help="number of cosine cycles after growth, each with half the previous peak; none = one cycle")
    g.add_argument("--reset_optimizer_growing", action="store_true",
                   help="drop the optimizer state (momentum) at growth")
    g.add_argument("--freeze_first_last_growing", action="store_true",
                   help="after growth, do not train the first conv and the classifier")
    g.add_argument("--freeze_coef_0_1_growing", action="store_true",
                   help="after growth, do not train the coefficients of members 0 and 1")
    g.add_argument("--warmup_01_growing", type=int, default=0,
                   help="after growth, train only members 0 and 1 coefficients for this many epochs")

    g = parser.add_argument_group("Optimization")
    g.add_argument("--batch_size", type=int, default=128, help="training batch size (per process)")
    g.add_argument("--eval_batch_size", type=int, default=256, help="evaluation batch size (per process)")
    g.add_argument("--drop_last", action="store_true", help="drop the last incomplete training batch")
    g.add_argument("--learning_rate", type=float, default=0.1, help="peak learning rate before growth")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--no_nesterov", action="store_true", help="plain momentum instead of Nesterov")
    g.add_argument("--decay", type=float, default=5e-4,
                   help="weight decay on templates, plain weights and BatchNorm (never on coefficients)")
    g.add_argument("--no_bn_decay", action="store_true", help="no weight decay on BatchNorm parameters")
    g.add_argument("--label_smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy")
    g.add_argument("--scheduler_type", default="cosine", choices=("cosine", "steps", "none"),
                   help="per-epoch learning-rate schedule")
    g.add_argument("--cosine_lr_warmup", type=int, default=2,
                   help="linear warm-up epochs (from 1e-5) of the cosine schedule")
    g.add_argument("--schedule", type=int, nargs="+", default=None,
                   help="--scheduler_type steps: epochs at which the lr is multiplied by a gamma")
    g.add_argument("--gammas", type=float, nargs="+", default=None,
                   help="--scheduler_type steps: one multiplier per --schedule epoch")
    g.add_argument("--reset_scheduler", action="store_true",
                   help="restart the lr schedule when member 1 starts")
    g.add_argument("--lr_schedule_as_member_0", action="store_true",
                   help="with --reset_scheduler, member 1's schedule is as long as member 0's")

    g = parser.add_argument_group("Checkpoints, evaluation and logging")
    g.add_argument("--save_path", default="./snapshots",
                   help="root of the run folders <save_path>/<dataset>/<tag>/seed_<seed>/")
    g.add_argument("--tag", default="run", help="name of the run (a folder level)")
    g.add_argument("--resume", default="", metavar="PATH",
                   help="checkpoint to continue from, or 'auto' for the newest valid one of this run")
    g.add_argument("--evaluate", action="store_true",
                   help="only evaluate the --resume checkpoint (members if pre-growth, else the grown net)")
    g.add_argument("--evaluate_ensemble", action="store_true",
                   help="evaluate --resume_member_0/1 and their averaged-logit ensemble")
    g.add_argument("--print_freq", type=int, default=100, help="log every N training steps")
    g.add_argument("--no_wandb", action="store_true",
                   help="accepted for the paper's scripts; logging is TensorBoard, never wandb")

    g = parser.add_argument_group("Hardware and reproducibility")
    g.add_argument("--ngpu", type=int, default=1, help="GPUs per process; 0 (or no CUDA) = CPU")
    g.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    g.add_argument("--dist", action="store_true",
                   help="distributed training; launch with torchrun (set automatically under torchrun)")
    g.add_argument("--amp", action="store_true",
                   help="automatic mixed precision: fp16 with loss scaling on CUDA, bf16 on CPU")
    g.add_argument("--channels_last", action="store_true",
                   help="keep activations in channels-last memory format (faster convolutions on recent GPUs)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step; recompiled after growth (FLOPs use the eager model); "
                        "implies --drop_last so that each phase compiles one batch shape")
    g.add_argument("--no_dp", action="store_true", help="accepted for the paper's scripts; no effect")
    g.add_argument("--manualSeed", type=int, default=None,
                   help="seed of Python, NumPy, torch and the data loaders; random if not given")
    return parser



def validate_args(args: argparse.Namespace) -> None:
    """Checks that need no data and no model, so mistakes fail before anything is loaded or written."""
    if args.dataset == "imagenet" and args.arch in ("wrn", "normalwrn"):
        raise ConfigError(f"--arch {args.arch} is the CIFAR Wide-ResNet; it does not fit --dataset imagenet")
    if len(args.growth_epochs) != 1:
        raise ConfigError("--growth_epochs takes one epoch (MixtureGrowth grows once), "
                          f"got {','.join(map(str, args.growth_epochs))}")
    if args.growth_epochs[0] >= 0 and args.arch in PLAIN_ARCHS:
        raise ConfigError(f"--arch {args.arch} is a plain network and cannot grow; pass --growth_epochs -1")
    if args.growth_epochs[0] < 0 and args.arch not in PLAIN_ARCHS:
        plain = "normalwrn" if args.arch == "wrn" else "normal_wrn_imagenet"
        raise ConfigError(f"--growth_epochs -1 trains a plain network; use --arch {plain} with it")
    if args.net2net_epoch < 0:
        raise ConfigError(f"--net2net_epoch must be >= 0 (0 = off), got {args.net2net_epoch}")
    if args.net2net_epoch:
        if args.arch != "normalwrn" or args.growth_epochs[0] != -1:
            raise ConfigError("--net2net_epoch widens a plain CIFAR Wide-ResNet: use it with --arch normalwrn "
                              "--growth_epochs -1")
        if args.net2net_epoch >= args.epochs:
            raise ConfigError(f"--net2net_epoch ({args.net2net_epoch}) must be below --epochs ({args.epochs})")
        if not 0 < args.template_size[0] < 1:
            raise ConfigError("--net2net_epoch starts at the width --wide x template_size[0]; that fraction must "
                              f"be between 0 and 1, got {args.template_size[0]}")
    if args.net2net_noise < 0:
        raise ConfigError(f"--net2net_noise must be >= 0, got {args.net2net_noise}")
    if args.coefs_growing == "random_blocks" and args.arch != "wrn":
        raise ConfigError("--coefs_growing random_blocks grows the CIFAR template Wide-ResNet; use --arch wrn")
    if args.cross_layer_sharing and args.arch not in ("wrn", "normalwrn"):
        raise ConfigError("--cross_layer_sharing shares the two convs of a CIFAR Wide-ResNet block; "
                          "for the ImageNet network use --arch wrn_imagenet_bank")
    if args.split_edge_layers and args.arch in ("normalwrn", "normal_wrn_imagenet"):
        raise ConfigError(f"--split_edge_layers splits template-mixed layers; --arch {args.arch} has none")
    if args.bank_group_size < 1:
        raise ConfigError(f"--bank_group_size must be at least 1, got {args.bank_group_size}")
    if args.evaluate and not args.resume:
        raise ConfigError("--evaluate needs --resume PATH (a checkpoint, or 'auto' for this run's newest)")
    if args.evaluate_ensemble and not (args.resume_member_0 and args.resume_member_1):
        raise ConfigError("--evaluate_ensemble needs both --resume_member_0 and --resume_member_1")
    for flag in ("resume_member_0", "resume_member_1"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            raise ConfigError(f"--{flag}: no checkpoint at {os.path.abspath(path)}")
    if args.resume and args.resume != "auto" and not os.path.isfile(args.resume):
        raise ConfigError(f"--resume: no checkpoint at {os.path.abspath(args.resume)}")
    for flag in ("batch_size", "eval_batch_size", "epochs"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {args.workers}")


def run_directory(args: argparse.Namespace) -> str:
    """``<save_path>/<dataset>/<tag>/seed_<seed>``; with ``--resume auto`` and no seed, the newest run of the tag."""
    import distributed

    tag_dir = os.path.join(args.save_path, args.dataset, args.tag)
    if args.manualSeed is None and args.resume == "auto":
        runs = sorted(glob.glob(os.path.join(glob.escape(tag_dir), "seed_*")), key=os.path.getmtime)
        if runs:
            args.manualSeed = int(os.path.basename(runs[-1])[len("seed_"):])
    if args.manualSeed is None:
        args.manualSeed = random.randint(100, 1_000_000)
    # Under torchrun every rank must use rank 0's seed: the same data order (the sampler's shards
    # partition one permutation) and the same run folder.
    args.manualSeed = distributed.broadcast_object(args.manualSeed)
    return os.path.join(tag_dir, f"seed_{args.manualSeed}")


def ensure_writable(folder: str) -> None:
    """Fail now, not after a day of training, when checkpoints could not be written."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-") as handle:
            handle.write(b"0" * 1024)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise ConfigError(f"--save_path: cannot write to {os.path.abspath(folder)} ({error.strerror})") from None


def cli(argv: list[str] | None = None) -> int:
    """``python main.py``: parse, run, and turn expected failures into one sentence and an exit status."""
    from engine import NonFiniteLossError

    args = get_args_parser().parse_args(argv)
    try:
        main(args)
    except ConfigError as error:
        print(f"main.py: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as error:
        print(f"main.py: stopped: {error}", file=sys.stderr)
        return EXIT_NON_FINITE
    except Preempted as error:
        print(f"main.py: {error}", file=sys.stderr)
        return EXIT_PREEMPTED
    return 0


def main(args: argparse.Namespace) -> dict:
    """Run what ``args`` asks for; returns the final metrics (also written to the run folder)."""
    validate_args(args)
    if args.evaluate or args.evaluate_ensemble:
        return run_evaluation(args)
    return run_training(args)


# --------------------------------------------------------------------------- set-up

EXIT_USAGE = 2  # a mistake in the command line or the files it names
EXIT_NON_FINITE = 3  # the loss or the weights became NaN / inf
EXIT_PREEMPTED = 75  # stopped by SIGTERM / SIGINT after writing a checkpoint (EX_TEMPFAIL: run it again)


class Context:
    """What every part of a run needs: the device, this process's rank, the logger, the data."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        import distributed
        from custom_log import RunLogger

        self.dist = distributed.init_distributed(use_cuda=args.ngpu > 0 and torch.cuda.is_available())
        if args.dist and not self.dist.enabled:
            raise ConfigError("--dist needs the processes started by torchrun, e.g. torchrun "
                              "--nproc_per_node=2 main.py ... (the scripts do this for NUM_GPUS > 1)")
        self.device = distributed.select_device(args.ngpu, self.dist.local_rank)
        self.main_process = distributed.is_main_process()
        self.logger = RunLogger(None, enabled=self.main_process)  # files once the run folder is checked
        self.scaler = torch.amp.GradScaler("cuda") if args.amp and self.device.type == "cuda" else None

    def log_to(self, run_dir: str) -> None:
        """From now on also write the log, metrics and TensorBoard files into ``run_dir``."""
        from custom_log import RunLogger

        self.logger.close()
        self.logger = RunLogger(run_dir, enabled=self.main_process)

    def close(self) -> None:
        import distributed

        self.logger.close()
        distributed.cleanup()


def build_data(args: argparse.Namespace, ctx: Context, dataset: str):
    """(training set, evaluation loader, input size, (train, eval) batch transforms).

    The batch transforms run on the device (``data.batch_transforms``; None for CIFAR and digits).
    A missing data set is a ConfigError, nothing written.
    """
    import data

    train_set, test_set = data.build_datasets(dataset, args.data_path, cutout=args.cutout,
                                              cifar_full=not args.no_cifar_full)
    test_loader = data.build_eval_loader(test_set, batch_size=args.eval_batch_size, workers=args.workers,
                                         pin_memory=ctx.device.type == "cuda", rank=ctx.dist.rank,
                                         world_size=ctx.dist.world_size)
    size = data.IMAGE_SIZE[dataset]
    transforms = data.batch_transforms(dataset, args.manualSeed, ctx.dist.rank)
    return train_set, test_loader, (3, size, size), transforms


def train_loader_for(args, ctx: Context, train_set, fraction: float):
    import data

    # --compile: one batch shape per phase. Recompiling the template-mixed step for the short
    # last batch crashes inductor on CPU (torch 2.14), and a second graph costs time anyway.
    return data.build_train_loader(train_set, batch_size=args.batch_size, workers=args.workers,
                                   seed=args.manualSeed, drop_last=args.drop_last or args.compile,
                                   pin_memory=ctx.device.type == "cuda", rank=ctx.dist.rank,
                                   world_size=ctx.dist.world_size, subset_fraction=fraction)


def ensure_disk_space(folder: str, model) -> None:
    """A run keeps up to six checkpoints of weights + momentum: refuse to start without room for them."""
    import shutil

    from compute_flops import count_parameters

    needed = 6 * 2 * 4 * count_parameters(model)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConfigError(f"--save_path: {os.path.abspath(folder)} has {free / 2**20:.0f} MiB free but the "
                          f"run's checkpoints need about {needed / 2**20:.0f} MiB")


def _num_classes(dataset: str) -> int:
    import data

    return data.NUM_CLASSES[dataset]


def load_member_checkpoint(path: str, flag: str):
    """A member trained by another run: (its network, the member it trained, the checkpoint).

    The member is the one the checkpoint's phase was training (``member_1.pth``
    holds member 1), so runs that trained one member each can be combined.
    """
    import checkpoint
    import models

    state = checkpoint.load_checkpoint(path, flag=flag)
    if state.get("grown") or state.get("phase") not in ("member_0", "member_1"):
        raise ConfigError(f"{flag}: {os.path.abspath(path)} holds a {state.get('phase')} network, not a member; "
                          "pass a member checkpoint such as member_0.pth")
    source_args = argparse.Namespace(**state["args"])
    source = models.create_model(source_args, _num_classes(source_args.dataset))
    source.load_state_dict(state["model"])
    return source, int(state["phase"][-1]), state


def model_config(model) -> dict | None:
    """What a checkpoint records about a network that its args alone do not determine.

    A plain Wide-ResNet (``normalwrn``, Net2Net's small or widened net, the plain net that
    ``--coefs_growing random_blocks`` trains after growth) is rebuilt from its widths; any other
    network from the run's args (``None``).
    """
    from models import WideResNet

    if not isinstance(model, WideResNet) or model.takes_member:
        return None
    return {"depth": model.depth, "channels": list(model.channels), "num_classes": model.num_classes,
            "use_bn": model.use_bn}


def plain_wrn_from_config(config: dict):
    from models import WideResNet
    from models.layers import PlainLayers

    return WideResNet(config["depth"], tuple(config["channels"]), config["num_classes"], PlainLayers(),
                      use_bn=config["use_bn"])


def initial_model(args: argparse.Namespace):
    """The network a training run starts with (Net2Net: the plain WRN at the member width)."""
    import models
    from models.net2net import small_plain_wrn

    if args.net2net_epoch:
        return small_plain_wrn(args, _num_classes(args.dataset))
    return models.create_model(args, _num_classes(args.dataset))


def restore_model(args_dict: dict, state: dict, device):
    """The network saved in ``state``, grown first when it was grown (so every tensor has its shape).

    Checkpoints with ``model_kind == "plain_wrn"`` hold a plain Wide-ResNet of the widths in
    ``model_config`` (Net2Net, random-block growth, normalwrn).
    """
    import models

    model_args = argparse.Namespace(**args_dict)
    if state.get("model_kind") == "plain_wrn":
        model = plain_wrn_from_config(state["model_config"])
        model.load_state_dict(state["model"])
        return model.to(device)
    model = models.create_model(model_args, _num_classes(model_args.dataset))
    if state.get("grown"):
        models.grow(model, model_args)
    model.load_state_dict(state["model"])
    return model.to(device)


def find_resume(args: argparse.Namespace, run_dir: str) -> tuple[str | None, dict | None]:
    """The checkpoint to continue from (``--resume PATH`` or ``auto``), checked against this run's flags."""
    import checkpoint

    path = checkpoint.latest_checkpoint(run_dir) if args.resume == "auto" else (args.resume or None)
    if path is None:
        return None, None
    state = checkpoint.load_checkpoint(path)
    requested = checkpoint.args_to_dict(args)
    # What decides the network a later epoch holds: its shape after growth / widening, and when.
    fields = checkpoint.MODEL_FIELDS + ("growth_epochs", "ensemble_train_epochs", "epochs",
                                        "add_extra_templates_growing", "coefs_growing", "net2net_epoch")
    checkpoint.check_compatible(state["args"], requested, fields)
    return path, state


# --------------------------------------------------------------------------- training


class Preempted(Exception):
    """SIGTERM / SIGINT arrived; a checkpoint was written and the run can be resumed."""


def run_training(args: argparse.Namespace) -> dict:
    import torch

    import checkpoint
    import distributed
    import engine
    import models
    from compute_flops import count_flops, count_parameters
    from schedule import build_plan
    from utils import rng_state, seed_everything, set_rng_state

    # Everything that can be wrong with the command line fails here, before anything is written.
    plan = build_plan(args)
    ctx = Context(args)
    stop = engine.StopRequest()
    try:
        run_dir = run_directory(args)
        resume_path, resumed = find_resume(args, run_dir)
        seed_everything(args.manualSeed)
        if args.channels_last and ctx.device.type != "cuda":
            raise ConfigError("--channels_last is a CUDA optimisation; on the CPU, torch 2.14's convolution "
                              "backward aborts on channels-last inputs whose batch size changes")

        def on_device(network):
            network = network.to(ctx.device)
            if args.channels_last:
                for param in network.parameters():  # plain conv weights; template weights are generated per step
                    if param.dim() == 4:
                        param.data = param.data.contiguous(memory_format=torch.channels_last)
            return network

        if resumed is not None and resumed.get("model_kind") == "plain_wrn":
            model = on_device(plain_wrn_from_config(resumed["model_config"]))  # replaced mid-run, see the loop
        else:
            model = on_device(initial_model(args))
        train_set, test_loader, input_size, (train_transform, eval_transform) = build_data(args, ctx, args.dataset)
        sources = {}
        if resumed is None:
            for slot, path in ((0, args.resume_member_0), (1, args.resume_member_1)):
                if path:
                    sources[slot] = load_member_checkpoint(path, f"--resume_member_{slot}")
        if ctx.main_process:
            ensure_writable(run_dir)
            ensure_disk_space(run_dir, model)
        ctx.log_to(run_dir)
        log = ctx.logger
        if args.arch == "wrn_imagenet_bank" or (args.split_edge_layers and models.is_template_model(model)):
            log.info("template banks:\n" + models.describe_banks(model))

        def new_optimizer():
            return engine.build_optimizer(model, lr=args.learning_rate, momentum=args.momentum,
                                          nesterov=not args.no_nesterov, weight_decay=args.decay,
                                          no_bn_decay=args.no_bn_decay)

        optimizer = new_optimizer()
        history, summary, start_epoch, best_top1, partial = [], [], 0, 0.0, None
        if resumed is not None:
            if resumed.get("grown") and models.is_template_model(model):
                models.grow(model, args)
            model.load_state_dict(resumed["model"])
            optimizer = new_optimizer()
            engine.load_optimizer_state_by_name(optimizer, model, resumed["optimizer"])
            if ctx.scaler is not None and resumed.get("scaler"):
                ctx.scaler.load_state_dict(resumed["scaler"])
            history, summary, best_top1 = list(resumed["metrics"]), list(resumed["summary"]), resumed["best_top1"]
            partial = resumed.get("partial")
            start_epoch = partial["epoch"] if partial else resumed["epoch"] + 1
            set_rng_state(resumed["rng"])
            where = f"epoch {partial['epoch']} step {partial['step']}" if partial else f"epoch {start_epoch}"
            log.info(f"resumed from {resume_path}: continuing at {where}")
        else:
            for slot, (source, source_member, _) in sources.items():
                models.transplant_member(model, source.to(ctx.device), slot, source_member)
                log.info(f"member {slot} loaded from --resume_member_{slot} (its member {source_member})")
            log.log_text("args", json.dumps(checkpoint.args_to_dict(args), indent=1))
            log.log_text("plan", plan.format())
            if ctx.main_process:
                from utils import atomic_write_text

                atomic_write_text(os.path.join(run_dir, "plan.json"), json.dumps(plan.to_dict(), indent=1))
                atomic_write_text(os.path.join(run_dir, "args.json"),
                                  json.dumps(checkpoint.args_to_dict(args), indent=1))
        log.info(f"run folder: {os.path.abspath(run_dir)}  device: {ctx.device}  processes: {ctx.dist.world_size}")
        log.info("training plan:\n" + plan.format())

        def members_of(entry):
            return tuple(entry.trained_members) if entry.trained_members else (None,)

        def evaluate_phase(entry):
            members = members_of(entry)
            results = engine.evaluate(model, test_loader, ctx.device, members, amp=args.amp,
                                      batch_transform=eval_transform)
            return results, results[entry.forward_member if entry.forward_member in results else members[-1]]

        def summary_row(name, entry, result, member):
            size_model = models.materialize(model, member) if models.is_template_model(model) else model
            return {"network": name, "top1": result["top1"], "top5": result["top5"],
                    "params": count_parameters(size_model), "flops": count_flops(model, input_size, member),
                    "epoch": entry.epoch}

        def save(name, state):
            checkpoint.save_checkpoint(state, os.path.join(run_dir, name), keep_previous=name == checkpoint.LATEST_NAME)

        def state_now(epoch, entry, extra=None):
            config = model_config(model)
            return {"args": checkpoint.args_to_dict(args), "epoch": epoch, "phase": entry.phase,
                    "grown": models.is_grown(model) or (config is not None and entry.phase == "grown"),
                    "model_kind": "args" if config is None else "plain_wrn", "model_config": config,
                    "model": model.state_dict(),
                    "optimizer": engine.optimizer_state_by_name(optimizer, model),
                    "scaler": ctx.scaler.state_dict() if ctx.scaler is not None else None,
                    "best_top1": best_top1, "metrics": history, "summary": summary, "rng": rng_state(),
                    **(extra or {})}

        cumulative_flops = history[-1]["train_flops_cumulative"] if history else 0.0
        grown_data = not args.data_growth or (plan.growth_epoch is not None and start_epoch >= plan.growth_epoch)
        train_loader = train_loader_for(args, ctx, train_set, 1.0 if grown_data else 0.5)
        net, step_flops, started = None, 0.0, time.time()
        stop.install()
        for epoch in range(start_epoch, len(plan)):
            entry = plan[epoch]
            members = members_of(entry)
            # Phase-start work already happened before an interrupted epoch was checkpointed.
            fresh = partial is None
            if fresh and entry.phase == "member_1" and entry.phase_starts:
                if args.copy_templates_and_bn_0_to_1:
                    models.copy_member_0_to_1(model, args.copy_templates_and_bn_0_to_1_noise)
                if args.scale_templates_and_coefs:
                    models.scale_member_0_to_1(model)
            if fresh and entry.grow_before and args.coefs_growing == "random_blocks":
                # Baseline: the run goes on with a plain network; its parameters are new tensors, so
                # the optimizer starts fresh (no momentum), at the plan's post-growth lr.
                from models.growth import grow_random_blocks

                model = on_device(grow_random_blocks(
                    model, scale_templates_and_coefs_growing=args.scale_templates_and_coefs_growing))
                if args.data_growth:
                    train_loader = train_loader_for(args, ctx, train_set, 1.0)
                optimizer, net = new_optimizer(), None
            elif fresh and entry.grow_before:
                models.grow(model, args)
                if args.data_growth:
                    train_loader = train_loader_for(args, ctx, train_set, 1.0)
                saved = engine.optimizer_state_by_name(optimizer, model)
                optimizer = new_optimizer()  # extra templates replace parameters: carry state by name
                if not args.reset_optimizer_growing:
                    engine.load_optimizer_state_by_name(optimizer, model, saved)
            if fresh and entry.grow_before:
                _, primary = evaluate_phase(entry)
                summary.append(summary_row("grown at growth", entry, primary, None))
                log.info(f"grown before epoch {epoch} (--coefs_growing {args.coefs_growing}): "
                         f"top-1 {primary['top1']:.2f}% before any training of the grown network")
            elif fresh and entry.new_optimizer and entry.phase_starts:
                optimizer = new_optimizer()
            if fresh and args.net2net_epoch and epoch == args.net2net_epoch:
                from models.net2net import net2wider
                from models.wrn import wrn_channels

                small_channels = model.channels
                model = on_device(net2wider(model, wrn_channels(args.wide), args.net2net_noise))
                # Fresh optimizer (the momentum buffers have the small shapes); the lr goes on along the
                # plain run's cosine. net = None rebuilds the trainable set, FLOPs and the DDP wrapper.
                optimizer, net = new_optimizer(), None
                _, primary = evaluate_phase(entry)
                summary.append(summary_row("widened (Net2Net)", entry, primary, None))
                log.info(f"Net2Net: widened {small_channels} -> {model.channels} before epoch {epoch} "
                         f"(noise {args.net2net_noise}): top-1 {primary['top1']:.2f}% before training on")
            if (net is None or entry.phase_starts
                    or entry.only_member_01_coefficients != plan[epoch - 1].only_member_01_coefficients):
                trainable = models.parameter_groups(
                    model, None if members == (None,) else members, no_bn_decay=args.no_bn_decay,
                    freeze_first_last=args.freeze_first_last_growing and entry.phase == "grown",
                    freeze_coefficients_01=args.freeze_coef_0_1_growing and entry.phase == "grown",
                    only_coefficients_01=entry.only_member_01_coefficients)
                n_trainable = engine.set_trainable(model, trainable[0] + trainable[1])
                step_flops = 3.0 * sum(count_flops(model, input_size, m) for m in members)
                net = engine.MembersForward(model)
                if args.compile:
                    net = torch.compile(net)
                if ctx.dist.enabled:
                    net = torch.nn.parallel.DistributedDataParallel(
                        net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
                log.info(f"phase {entry.phase}: {n_trainable:,} trainable parameters, "
                         f"{step_flops / 3 / 1e9:.4f} GFLOPs per image and forward")
            engine.set_lr(optimizer, entry.lr)
            train_loader.sampler.set_epoch(epoch, skip=partial["step"] * args.batch_size if partial else 0)
            epoch_start = time.time()
            train_metrics = engine.train_one_epoch(
                net, train_loader, optimizer, ctx.device, members=members,
                loss_weights=entry.loss_weights or (1.0,), epoch=epoch, phase=entry.phase,
                label_smoothing=args.label_smoothing, amp=args.amp, scaler=ctx.scaler,
                show_progress=ctx.main_process, stop=stop, resume_from=partial,
                channels_last=args.channels_last, batch_transform=train_transform)
            partial = None
            if not train_metrics["completed"]:
                step = train_metrics["partial"]["step"]
                if ctx.main_process:
                    save(checkpoint.LATEST_NAME, state_now(epoch - 1, entry,
                                                           {"partial": {"epoch": epoch, **train_metrics["partial"]}}))
                raise Preempted(f"stopped by {stop.signal_name} at epoch {epoch}, step {step} ({entry.phase}); "
                                f"checkpoint written to {os.path.abspath(run_dir)}; resume with the same command "
                                "plus --resume auto")
            distributed.broadcast_buffers(model)
            if not all(torch.isfinite(p).all() for p in model.parameters()):
                raise engine.NonFiniteLossError(f"the weights became non-finite during epoch {epoch} ({entry.phase}); "
                                                "the last good checkpoint is kept")
            results, primary = evaluate_phase(entry)
            cumulative_flops += step_flops * train_metrics["train_samples"]
            if entry.phase_starts:
                best_top1 = 0.0
            is_best = primary["top1"] > best_top1
            best_top1 = max(best_top1, primary["top1"])
            metrics = {"epoch": epoch, "phase": entry.phase, "phase_index": entry.phase_index, "lr": entry.lr,
                       **{k: v for k, v in train_metrics.items() if k != "completed"},
                       "test_loss": primary["loss"], "test_top1": primary["top1"], "test_top5": primary["top5"],
                       "best_top1": best_top1, "train_flops_cumulative": cumulative_flops,
                       "epoch_time": time.time() - epoch_start}
            if len(results) > 1:
                metrics.update({f"test_top1_member_{m}": r["top1"] for m, r in results.items()})
            history.append(metrics)
            log.log_epoch(metrics)
            amp_note = f", {metrics['amp_skipped_steps']} overflow steps skipped" if metrics["amp_skipped_steps"] else ""
            log.info(f"epoch {epoch:>4} {entry.phase:<8} lr {entry.lr:.2e}  train loss {metrics['train_loss']:.4f} "
                     f"top-1 {metrics['train_top1']:.2f}  test top-1 {primary['top1']:.2f} "
                     f"top-5 {primary['top5']:.2f}  ({metrics['epoch_time']:.1f}s{amp_note})")
            phase_ends = epoch + 1 == len(plan) or plan[epoch + 1].phase != entry.phase
            if phase_ends:
                if entry.phase == "member_1" and 0 in results:
                    summary.append(summary_row("member 0", entry, results[0], 0))
                name = {"member_0": "member 0", "member_1": "member 1", "grown": "grown final",
                        "plain": "plain final"}[entry.phase]
                summary.append(summary_row(name, entry, primary, entry.forward_member))
            if ctx.main_process:
                state = state_now(epoch, entry)
                save(checkpoint.LATEST_NAME, state)
                if is_best:
                    save(checkpoint.BEST_NAME, state)
                if phase_ends and entry.phase in ("member_0", "member_1"):
                    save(checkpoint.member_checkpoint_name(entry.forward_member), state)
                if phase_ends and entry.phase in ("grown", "plain"):
                    save(checkpoint.GROWN_FINAL_NAME, state)
            distributed.barrier()
        if history:
            finish(args, run_dir, plan, history, summary, ctx, time.time() - started)
        return {"final": history[-1] if history else {}, "summary": summary, "run_dir": run_dir,
                "history": history, "model": model}
    finally:
        stop.restore()
        ctx.close()


def finish(args, run_dir: str, plan, history: list, summary: list, ctx: Context, seconds: float) -> None:
    """The end-of-run report: summary table, summary.json, accuracy PNGs."""
    if not ctx.main_process:
        return
    from custom_log import format_seconds, format_table, humanize, plot_accuracy
    from utils import atomic_write_text

    boundaries = [e for e in (plan.member_1_epoch, plan.growth_epoch) if e]
    if args.net2net_epoch:
        boundaries = {args.net2net_epoch: "Net2Net widening"}
    plot = plot_accuracy(history, os.path.join(run_dir, "accuracy.png"), growth_epochs=boundaries,
                         title=f"{args.dataset} {args.tag} seed {args.manualSeed}")
    table = format_table(summary, ["network", "top1", "top5", "params", "flops", "epoch"],
                         formats={"params": humanize, "flops": humanize})
    ctx.logger.info(f"summary:\n{table}\ntotal training FLOPs {humanize(history[-1]['train_flops_cumulative'])}, "
                    f"wall time of this session {format_seconds(seconds)}\naccuracy curves: {plot}")
    atomic_write_text(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=1))


# --------------------------------------------------------------------------- evaluation


def run_evaluation(args: argparse.Namespace) -> dict:
    """``--evaluate --resume PATH``: the checkpoint's members (pre-growth) or its grown network.

    ``--evaluate_ensemble``: members from ``--resume_member_0/1`` and their averaged-logit ensemble.
    The network is rebuilt from the checkpoint's own arguments; the CLI only says where the data is.
    """
    import checkpoint
    import engine
    import models
    from custom_log import format_table
    from utils import seed_everything

    ctx = Context(args)
    try:
        path = args.resume
        if args.evaluate and path == "auto":
            run_dir = run_directory(args)
            path = checkpoint.latest_checkpoint(run_dir)
            if path is None:
                raise ConfigError(f"--resume auto: no checkpoint in {os.path.abspath(run_dir)}")
        if args.manualSeed is None:
            args.manualSeed = 0  # evaluation draws no random numbers; seed only for tidiness
        seed_everything(args.manualSeed)
        if args.evaluate_ensemble:
            member_0, from_0, state = load_member_checkpoint(args.resume_member_0, "--resume_member_0")
            member_1, from_1, _ = load_member_checkpoint(args.resume_member_1, "--resume_member_1")
            model = models.create_model(argparse.Namespace(**state["args"]), _num_classes(state["args"]["dataset"]))
            models.transplant_member(model, member_0, 0, from_0)
            models.transplant_member(model, member_1, 1, from_1)
            keys = (0, 1)
        else:
            state = checkpoint.load_checkpoint(path)
            model = restore_model(state["args"], state, ctx.device)
            keys = (None,) if not models.is_template_model(model) or state.get("grown") else (0, 1)
        model = model.to(ctx.device)
        _, test_loader, _, (_, eval_transform) = build_data(args, ctx, state["args"]["dataset"])
        results = engine.evaluate(model, test_loader, ctx.device, keys, amp=args.amp,
                                  ensemble=args.evaluate_ensemble, show_progress=ctx.main_process,
                                  batch_transform=eval_transform)
        names = {0: "member 0", 1: "member 1", None: "grown" if state.get("grown") else "network",
                 "ensemble": "ensemble (mean logits)"}
        rows = [{"network": names[key], "top1": r["top1"], "top5": r["top5"], "loss": r["loss"]}
                for key, r in results.items()]
        ctx.logger.info("evaluation:\n" + format_table(rows))
        return {"results": {names[k]: v for k, v in results.items()}, "epoch": state.get("epoch")}
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(cli())

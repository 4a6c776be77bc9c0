"""MixtureGrowth training CLI.

``get_args_parser()`` returns the parser; ``main(args)`` runs a whole experiment
(member 0, member 1, growth, grown network) or an evaluation. Nothing runs at
import time.
"""

from __future__ import annotations

import argparse

from utils import parse_list

DATASETS = ("cifar10", "cifar100", "imagenet", "digits")
ARCHS = ("wrn", "normalwrn")
COEF_GROWTH_MODES = ("orthogonal", "copy", "zero", "random", "none")


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
                   help="wrn: template-mixed Wide-ResNet; normalwrn: plain Wide-ResNet")
    g.add_argument("--depth", type=int, default=28, help="Wide-ResNet depth, 6n+4")
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
    g.add_argument("--ensemble_growth_type", default="diag", choices=("diag",),
                   help="where members sit in the grown weight grid: diag = [[W0, W2], [W3, W1]]")

    g = parser.add_argument_group("Phases")
    g.add_argument("--epochs", type=int, default=100, help="total epochs of the run, all phases")
    g.add_argument("--growth_epochs", type=parse_list(int, "--growth_epochs"), default=[100],
                   help="epochs of member 0 before member 1 starts (growth happens after member 1); "
                        "-1 = no growth, train one plain network")
    g.add_argument("--ensemble_train_epochs", type=int, default=100,
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
                   help="initial value of the new coefficients at growth")
    g.add_argument("--coefs_noise_growing", type=float, default=1.0,
                   help="scale of the new coefficients / of the noise added to copied ones")
    g.add_argument("--add_extra_templates_growing", type=int, default=0,
                   help="extra Kaiming-initialised templates added to each set at growth")
    g.add_argument("--scale_templates_and_coefs_growing", action="store_true",
                   help="at growth, rescale set 0 templates and member 0 coefficients to set 1's norms")
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
    g.add_argument("--amp", action="store_true", help="automatic mixed precision")
    g.add_argument("--no_dp", action="store_true", help="accepted for the paper's scripts; no effect")
    g.add_argument("--manualSeed", type=int, default=None,
                   help="seed of Python, NumPy, torch and the data loaders; random if not given")
    return parser


def main(args: argparse.Namespace) -> dict:
    raise NotImplementedError("the training loop lands with the CLI issue")


if __name__ == "__main__":
    main(get_args_parser().parse_args())

"""The task-incremental protocol: train the tasks one after the other, store each, rebuild any.

For task t of a split (SPEC 4):

1. seed everything from (seed, t), build the task's network (a fresh head with one output per
   class of the task) and, for NWS, install the frozen pools;
2. t > 0: start from task t-1 *as stored*: its indices rebuild the temporary weights and its
   BatchNorms are loaded (the head stays fresh);
3. train ``Recipe.epochs`` epochs: cross-entropy + beta * sum of the layers' commitment terms,
   lr dropped by ``lr_gamma`` at each milestone (fractions of the epochs); ``Training`` describes
   this to ``engine.fit``, and checkpoints the task in flight after every epoch and when a signal
   stops one mid-way;
4. search every layer's nearest pool vectors once, rebuild the network from the state to be
   stored, measure it on the task's test set ("right after") and write ``task_<t>.pth``.

Because step 2 reads the previous task's file, a run resumed at task t (``--resume auto``, from the
checkpoint of task t in flight when there is one) does exactly what an uninterrupted run does. Two baselines share the loop and differ in what they store:

    plain_per_task     plain network fine-tuned from the previous task, every task's float weights stored
    plain_sequential   one plain network fine-tuned task after task; a task keeps only its head, and is
                       re-measured at the end with the final network (forgetting)

Plain task files hold the whole network (so the run can resume from them); the memory figures
count what each method needs: ``plain_sequential`` one network plus a head per task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training import checkpoint
from training import distributed
from training import engine
from training import runtime
from models.nws import (NetworkConfig, assign_all, build_network, commitment_loss, load_pools, nws_layers,
                        search_all)
from training.metrics import AverageMeter
from training.run import Run
from training.training_state import restore_training_state, training_state
from utils import ConfigError

from .splits import Task, TaskData
from .storage import (NWS_TASK_KIND, PLAIN_TASK_KIND, as_byte_tensor, batchnorm_state, compress_indices,
                      decompress_indices, load_batchnorm_state, nws_task_memory, pools_digest, state_bytes)

HEAD = "classifier"  # the head's module name in models.resnet18 and models.wrn


@dataclass(frozen=True)
class Recipe:
    """How each task trains (SPEC 4's Split-CIFAR-100 recipe by default in ``nws.py``)."""

    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    beta: float
    lr_milestones: tuple[float, ...] = (0.5, 0.8)
    lr_gamma: float = 0.1

    def lr_at(self, epoch: int) -> float:
        """The lr of ``epoch``: ``lr * lr_gamma ** (milestones passed)``; 100 epochs drop at 50 and 80."""
        drops = sum(epoch >= milestone * self.epochs for milestone in self.lr_milestones)
        return self.lr * self.lr_gamma ** drops


@dataclass
class Loops(runtime.Loaders):
    """How the loops run: the run's loaders (context, batch sizes, workers), mixed precision, progress bars."""

    amp: bool = False
    show_progress: bool = True

    def evaluate(self, model: nn.Module, dataset) -> dict:
        return engine.evaluate(model, self.eval_loader(dataset), self.ctx.device, amp=self.amp)[None]


def task_seed(seed: int, task: int) -> int:
    """The seed of task ``task``'s head, data order and augmentation: depends on (seed, task) only."""
    return (seed * 1_000_003 + 7919 * task) % 2**62


def commitment_term(model: nn.Module, beta: float, meter: AverageMeter, row: dict):
    """``auxiliary_loss`` for the engine: beta * the sum of every NWS layer's commitment term;
    ``row["commitment"]`` is kept at their mean over the epoch's steps so far (``meter``)."""
    def term() -> torch.Tensor:
        value = commitment_loss(model)
        meter.update(value.item())
        row["commitment"] = meter.avg
        return beta * value
    return term


class Training(engine.Trainee):
    """One network trained for the recipe's epochs by ``engine.fit``: a task of the protocol, or pretraining.

    Each epoch trains at ``recipe.lr_at(epoch)`` on cross-entropy (+ beta * the commitment terms with
    ``nws``), measures ``test_set`` after every ``test_every``-th epoch (0: never; the protocol
    measures each task once it is stored anyway) as ``split`` ("val" when it is a held-out part of
    the training set), and writes the run folder's checkpoint.pth (``run.save``, of the run's kind) after
    every epoch and when a signal stops one mid-way: the network, optimizer, rng, rows so far, the steps
    done of the epoch, plus ``extra_state()`` (what the caller needs to know the training again: its args,
    task, pool learner).
    ``resume(state)`` continues from such a checkpoint exactly. Metrics rows count epochs from
    ``epoch_offset`` (the epochs of the tasks before), so a run's rows run on across its tasks.
    """

    def __init__(self, model: nn.Module, train_set, test_set, recipe: Recipe, loops: Loops, *, seed: int,
                 phase: str, epoch_offset: int, nws: bool, run: Run, extra_state=dict, test_every: int = 1,
                 split: str = "test") -> None:
        self.model, self.test_set, self.recipe, self.loops = model, test_set, recipe, loops
        self.phase, self.epoch_offset, self.nws, self.run, self.run_dir = phase, epoch_offset, nws, run, run.run_dir
        self.extra_state, self.test_every, self.split = extra_state, test_every, split
        self.ctx = loops.ctx
        self.optimizer = engine.build_optimizer(model, lr=recipe.lr, momentum=recipe.momentum, nesterov=False,
                                                weight_decay=recipe.weight_decay)
        self.net = engine.wrap_for_training(model, self.ctx)
        self.loader = loops.train_loader(train_set, seed)
        self.rows, self.start_epoch, self.partial = [], 0, None
        self.commitment, self.columns = AverageMeter(), {}

    def resume(self, state: dict) -> None:
        """Continue from a checkpoint ``save`` wrote (or a pretraining checkpoint of before ``engine.fit``)."""
        self.model.load_state_dict(state["model"])
        restore_training_state(state, self.model, self.optimizer, self.ctx.scaler)
        self.rows = list(state["metrics"]) if isinstance(state["metrics"], list) else [state["metrics"]]
        self.start_epoch, self.partial = state["epoch"] - self.epoch_offset + 1, state.get("partial")
        self.commitment.sum, self.commitment.count = state.get("commitment", (0.0, 0))

    def resumed_at(self) -> str:
        """Where a resumed training goes on, for the log: "continuing task 2 at epoch 1, step 3"."""
        step = f", step {self.partial['step']}" if self.partial else ""
        return f"continuing {self.phase} at epoch {self.start_epoch}{step}"

    def fit(self) -> list[dict]:
        """Train the epochs left (all of them, unless resumed); the metrics rows of the whole training."""
        engine.fit(self, range(self.start_epoch, self.recipe.epochs), partial=self.partial,
                   show_progress=self.loops.show_progress)
        return self.rows

    def last_measured(self) -> float | None:
        """The newest ``<split>_top1`` of the rows (None when nothing was measured)."""
        return next((row[f"{self.split}_top1"] for row in reversed(self.rows) if f"{self.split}_top1" in row), None)

    # ----------------------------------------------------------------- engine.Trainee

    def begin_epoch(self, epoch: int) -> engine.EpochSpec:
        if self.partial is None:  # a resumed epoch goes on with the commitment of its steps done
            self.commitment = AverageMeter()
        self.partial, self.columns = None, {}
        auxiliary = commitment_term(self.model, self.recipe.beta, self.commitment, self.columns) if self.nws else None
        return engine.EpochSpec(net=self.net, model=self.model, optimizer=self.optimizer, loader=self.loader,
                                phase=self.phase, lr=self.recipe.lr_at(epoch), row_epoch=self.epoch_offset + epoch,
                                step=engine.StepOptions(amp=self.loops.amp, auxiliary_loss=auxiliary), row=self.columns)

    def checkpoint(self, epoch: int, spec: engine.EpochSpec, partial: dict | None) -> None:
        self.save(epoch, partial)

    def evaluate(self, epoch: int, spec: engine.EpochSpec) -> tuple[str, dict] | None:
        if self.test_every and (epoch + 1) % self.test_every == 0:
            return self.split, self.loops.evaluate(self.model, self.test_set)
        return None

    def end_epoch(self, epoch: int, spec: engine.EpochSpec, row: dict) -> None:
        self.rows.append(row)
        self.save(epoch + 1, None)
        distributed.barrier()

    def save(self, epoch: int, partial: dict | None) -> None:
        """checkpoint.pth: what continues at ``epoch`` (``partial``: the steps of it done), on the main process."""
        if not self.ctx.main_process:
            return
        state = {"epoch": self.epoch_offset + epoch - 1, "model": self.model.state_dict(),
                 **training_state(self.model, self.optimizer, self.ctx.scaler), "metrics": self.rows, "partial": partial,
                 "commitment": (self.commitment.sum, self.commitment.count), **self.extra_state()}
        self.run.save(checkpoint.LATEST_NAME, state)


# --------------------------------------------------------------------------- task states


def nws_task_state(model: nn.Module, task: Task, config: NetworkConfig, pools: dict[str, torch.Tensor],
                   extra: dict) -> dict:
    """Search every layer once, rebuild the model from those indices, and describe the task for its file."""
    indices = search_all(model)
    assign_all(model, indices)
    blob, counts, bits = compress_indices(indices, config.pool_size)
    state = {"kind": NWS_TASK_KIND, "task": task.index, "name": task.name, "classes": list(task.classes),
             "network": config.to_dict(), "index_bits": bits, "index_counts": counts,
             "indices_lzma": as_byte_tensor(blob), "batchnorm": batchnorm_state(model),
             "pools_digest": pools_digest(pools), **extra}
    if not config.nws_classifier:
        state["head"] = {key: value.detach().cpu().clone() for key, value in getattr(model, HEAD).state_dict().items()}
    return state


def plain_task_state(model: nn.Module, task: Task, config: NetworkConfig, method: str, extra: dict) -> dict:
    return {"kind": PLAIN_TASK_KIND, "method": method, "task": task.index, "name": task.name,
            "classes": list(task.classes), "network": config.to_dict(),
            "weights": {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}, **extra}


def _without_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state.items() if not key.startswith(HEAD + ".")}


def rebuild(task_state: dict, device: torch.device, *, pools: dict[str, torch.Tensor] | None = None,
            final_state: dict | None = None) -> nn.Module:
    """The network of a stored task, from its file alone (plus the pools, or for ``plain_sequential``
    the final network's file), in evaluation mode on ``device``."""
    config = NetworkConfig.from_dict(task_state["network"])
    model = build_network(config).to(device)
    if task_state["kind"] == NWS_TASK_KIND:
        if pools is None:
            raise ConfigError(f"task {task_state['task']} is an NWS task and needs the run's pools.pth")
        if pools_digest(pools) != task_state["pools_digest"]:
            raise ConfigError(f"task {task_state['task']} was stored with other pools than the run's pools.pth")
        load_pools(model, pools)
        indices = decompress_indices(bytes(task_state["indices_lzma"].numpy()), task_state["index_counts"],
                                     task_state["index_bits"])
        assign_all(model, indices)
        load_batchnorm_state(model, task_state["batchnorm"])
        if "head" in task_state:
            getattr(model, HEAD).load_state_dict(task_state["head"])
    elif task_state.get("method") == "plain_sequential" and final_state is not None:
        model.load_state_dict({**_without_head(final_state["weights"]),
                               **{k: v for k, v in task_state["weights"].items() if k.startswith(HEAD + ".")}})
    else:
        model.load_state_dict(task_state["weights"])
    return model.eval()


def start_from_previous(model: nn.Module, previous: dict, pools: dict[str, torch.Tensor] | None) -> None:
    """Task t > 0 starts from task t-1 as stored: its rebuilt weights and BatchNorms; the head stays fresh."""
    if previous["kind"] == NWS_TASK_KIND:
        indices = decompress_indices(bytes(previous["indices_lzma"].numpy()), previous["index_counts"],
                                     previous["index_bits"])
        for name, layer in nws_layers(model).items():
            if name != HEAD:
                layer.assign(indices[name])
        load_batchnorm_state(model, previous["batchnorm"])
    else:
        missing, unexpected = model.load_state_dict(_without_head(previous["weights"]), strict=False)
        if unexpected or any(not key.startswith(HEAD + ".") for key in missing):
            raise ConfigError(f"task {previous['task']}'s stored network does not fit this run's network")


def new_task_network(config: NetworkConfig, task_data: TaskData, device: torch.device,
                     pools: dict[str, torch.Tensor] | None, previous: dict | None) -> nn.Module:
    model = build_network(config.with_classes(len(task_data.task.classes))).to(device)
    if config.nws:
        load_pools(model, pools)
    if previous is not None:
        start_from_previous(model, previous, pools)
    return model


# --------------------------------------------------------------------------- memory


def float_weight_bytes(config: NetworkConfig) -> dict[str, int]:
    """fp32 bytes of a task's network stored as floats: conv/linear weights, BatchNorms, all."""
    model = build_network(NetworkConfig.from_dict({**config.to_dict(), "nws": False}))
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))) * 4
    batchnorm = state_bytes(batchnorm_state(model))
    return {"weights": weights, "batchnorm": batchnorm, "total": weights + batchnorm}


def head_bytes(task_state: dict) -> int:
    return state_bytes({k: v for k, v in task_state["weights"].items() if k.startswith(HEAD + ".")})


def memory_table(method: str, task_states: list[dict], pools: dict[str, torch.Tensor] | None) -> dict:
    """Bytes per task and in total for ``method``, against storing every task's float weights."""
    config = NetworkConfig.from_dict(task_states[0]["network"])
    floats = float_weight_bytes(config)
    if method == "nws":
        per_task = [nws_task_memory(state) for state in task_states]
        once = state_bytes(pools or {})
    elif method == "plain_per_task":
        per_task = [{"total": state_bytes(state["weights"])} for state in task_states]
        once = 0
    else:  # one network, plus each task's head
        per_task = [{"total": head_bytes(state)} for state in task_states]
        once = state_bytes(_without_head(task_states[-1]["weights"]))
    total = once + sum(entry["total"] for entry in per_task)
    return {"per_task": per_task, "once": once, "total": total, "float_per_task": floats,
            "float_total": floats["total"] * len(task_states)}

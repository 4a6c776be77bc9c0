"""The evolution loop: tournament, eviction, SGDR, lineage, resume, and evolve.py's command line."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from training import checkpoint
from training import engine
import evolve
import models
from evolution import choices
from evolution.lineage import FITNESS_PLOT, LINEAGE_FILE, PARAMS_PLOT, PARETO_PLOT, read_lineage
from evolution.population import Individual, Population, tournament_size
from evolution.report import CHAMPION_NAME
from evolution.search import Search
from evolution.sgdr import SGDR, cycle_lengths
from models.cellnet import base_config
from operators.mutations import MUTATIONS
from utils import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def individual(id_: int, fitness: float) -> Individual:
    return Individual(id=id_, parent=None, generation=0, mutation=None, description="", config={}, fitness=fitness)


# --------------------------------------------------------------------------- tournament and eviction


def test_tournament_size_is_max_2_floor_fraction_times_population():
    assert tournament_size(15, 0.15) == 2
    assert tournament_size(20, 0.15) == 3
    assert tournament_size(15, 0.5) == 7
    assert tournament_size(3, 1.0) == 3
    assert tournament_size(2, 0.01) == 2


def test_the_tournament_winner_is_the_fittest_of_the_drawn_individuals():
    fitness = [50.0, 90.0, 10.0, 70.0, 30.0, 60.0, 20.0, 80.0, 40.0, 0.0]
    population = Population(10, [individual(i, f) for i, f in enumerate(fitness)])
    for seed in range(20):
        winner, drawn = population.select(0.3, torch.Generator().manual_seed(seed))
        expected = torch.randperm(10, generator=torch.Generator().manual_seed(seed))[:3].tolist()
        assert drawn == expected
        assert winner.fitness == max(fitness[i] for i in expected)


def test_a_tournament_of_the_whole_population_picks_the_best_and_ties_go_to_the_older():
    population = Population(4, [individual(0, 10.0), individual(1, 80.0), individual(2, 80.0), individual(3, 5.0)])
    winner, drawn = population.select(1.0, torch.Generator().manual_seed(0))
    assert sorted(drawn) == [0, 1, 2, 3] and winner.id == 1


def test_a_child_joins_and_the_least_fit_leaves_even_when_it_is_the_child():
    population = Population(3, [individual(0, 40.0), individual(1, 60.0), individual(2, 20.0)])
    assert population.add(individual(3, 50.0)).id == 2  # the parent (say 1) stays
    assert [m.id for m in population.members] == [0, 1, 3]
    assert population.add(individual(4, 10.0)).id == 4  # a worse child does not stay
    assert population.add(individual(5, 40.0)).id == 0  # a tie: the older leaves
    assert [m.id for m in population.members] == [1, 3, 5]


def test_the_population_is_not_full_until_capacity_and_nobody_leaves_before():
    population = Population(2)
    assert population.add(individual(0, 1.0)) is None and not population.full
    assert population.add(individual(1, 0.0)) is None and population.full


def test_impossible_population_rules_are_one_sentence():
    with pytest.raises(ConfigError, match="--population_size"):
        Population(1)
    with pytest.raises(ConfigError, match="--tournament_fraction"):
        Population(3, [individual(i, 1.0) for i in range(3)]).select(0.0, torch.Generator())


# --------------------------------------------------------------------------- SGDR


def test_sgdr_cycles_double_and_a_short_last_cycle_ends_the_training():
    assert cycle_lengths(15) == [1, 2, 4, 8]
    assert cycle_lengths(63) == [1, 2, 4, 8, 16, 32]
    assert cycle_lengths(5) == [1, 2, 2]
    assert cycle_lengths(1) == [1]


def test_sgdr_restarts_at_every_cycle_and_anneals_per_batch_to_near_zero():
    schedule = SGDR(0.05, 15, steps_per_epoch=10)
    assert schedule.cycle_starts() == [0, 1, 3, 7]
    for start, length in zip(schedule.cycle_starts(), cycle_lengths(15)):
        assert schedule.lr(start, 0) == pytest.approx(0.05)
        lrs = [schedule.lr(epoch, step) for epoch in range(start, start + length) for step in range(10)]
        assert all(a > b for a, b in zip(lrs, lrs[1:]))  # falls with every batch
        assert lrs[-1] < 0.05 * 0.03
        halfway = length * 10 // 2
        assert lrs[halfway] == pytest.approx(0.025)


# --------------------------------------------------------------------------- the search, driven with fake fitness


def tiny_search(**overrides) -> Search:
    config = base_config(10, input_size=8, num_cells=1, head_channels=2, cell_channels=3, tail_channels=2, fc_units=4)
    settings = dict(population_size=3, tournament_fraction=0.5, generations=4,
                    mutations=["wider", "deeper", "wider_kernel", "skip_connection"], noise=1e-5, base_epochs=2,
                    mutation_epochs=1, final_epochs=3, seed=0)
    settings.update(overrides)
    return Search("cellnet", config, **settings)


def run_fake(search: Search, tasks: int | None = None) -> list:
    """Complete tasks with a fitness that favours wider networks; returns the tasks run."""
    done = []
    while tasks is None or len(done) < tasks:
        task = search.next_task()
        if task is None or task.stage == "final":
            break
        params = sum(p.numel() for p in task.model.parameters())
        search.complete(task, task.model, fitness=params % 97, params=params, flops=0, epochs=task.epochs, seconds=0)
        done.append(task)
    return done


def test_the_search_trains_base_then_population_then_one_child_per_generation_then_the_champion():
    search = tiny_search()
    tasks = run_fake(search)
    assert [t.stage for t in tasks] == ["base"] + ["population"] * 3 + ["generations"] * 4
    assert [t.epochs for t in tasks] == [2] + [1] * 7
    assert [t.individual.generation for t in tasks] == [0, 0, 0, 0, 1, 2, 3, 4]
    assert all(t.individual.parent == 0 for t in tasks[1:4])
    assert len(search.population) == 3 and len(search.lineage) == 8
    final = search.next_task()
    assert final.stage == "final" and final.epochs == 3 and final.individual.id == search.population.best().id
    evicted = [ind for ind in search.lineage if ind.evicted_in is not None]
    assert len(evicted) == 4 and all(ind.state == {} for ind in evicted)
    members = {ind.id for ind in search.population.members}
    assert members == {ind.id for ind in search.lineage[1:] if ind.evicted_in is None}


def test_every_child_is_its_parent_plus_one_recorded_mutation():
    search = tiny_search()
    tasks = run_fake(search)
    by_id = {ind.id: ind for ind in search.lineage}
    for task in tasks[1:]:
        child, parent = task.individual, by_id[task.individual.parent]
        assert child.mutation in ("wider", "deeper", "wider_kernel", "skip_connection")
        assert child.description.startswith(child.mutation)
        assert child.config != parent.config


def test_a_restored_search_makes_the_same_choices():
    search = tiny_search()
    run_fake(search, tasks=5)
    saved = search.state_dict()
    checkpoint_copy = tiny_search()
    checkpoint_copy.load_state_dict(saved)
    original, restored = run_fake(search), run_fake(checkpoint_copy)
    assert [t.individual.record() for t in original] == [t.individual.record() for t in restored]
    for a, b in zip(original, restored):
        assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_handing_out_tasks_two_at_a_time_makes_the_same_search_as_one_at_a_time():
    one, two = tiny_search(children_per_generation=2), tiny_search(children_per_generation=2)
    run_fake(one)
    while (tasks := two.next_tasks(2)) and tasks[0].stage != "final":
        for task in tasks:  # complete in the order handed out, as evolve.py does after a round
            params = sum(p.numel() for p in task.model.parameters())
            two.complete(task, task.model, fitness=params % 97, params=params, flops=0, epochs=task.epochs,
                          seconds=0)
    assert [ind.record() for ind in two.lineage] == [ind.record() for ind in one.lineage]
    assert [ind.generation for ind in one.lineage] == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [ind.id for ind in two.population.members] == [ind.id for ind in one.population.members]


def test_base_only_sends_the_base_network_to_the_final_training():
    search = tiny_search(base_only=True)
    tasks = run_fake(search)
    assert [t.stage for t in tasks] == ["base"]
    final = search.next_task()
    assert final.stage == "final" and final.individual.id == 0


# --------------------------------------------------------------------------- evolve.py


TINY_SEARCH = ["--dataset", "digits", "--train_subset", "300", "--ngpu", "0", "--workers", "0", "--batch_size", "64",
               "--num_cells", "2", "--head_channels", "4", "--cell_channels", "6", "--tail_channels", "4",
               "--fc_units", "8", "--dropout_conv", "0.1", "--dropout_fc", "0.1", "--population_size", "3",
               "--generations", "2", "--base_epochs", "1", "--mutation_epochs", "2", "--final_epochs", "1",
               "--tournament_fraction", "0.5", "--manualSeed", "5", "--tag", "tiny"]


def tiny_argv(save_path, *extra):
    return TINY_SEARCH + ["--save_path", str(save_path), *map(str, extra)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return evolve.main(evolve.get_args_parser().parse_args(tiny_argv(tmp_path_factory.mktemp("search"))))


def test_a_search_writes_its_lineage_plots_and_a_champion_that_rebuilds_from_its_checkpoint(uninterrupted):
    run_dir = uninterrupted["run_dir"]
    lineage = read_lineage(os.path.join(run_dir, LINEAGE_FILE))
    assert [r["id"] for r in lineage] == list(range(1 + 3 + 2))
    assert all({"id", "parent", "mutation", "params", "flops", "fitness", "epochs", "seconds"} <= set(r)
               for r in lineage)
    assert all(r["parent"] < r["id"] for r in lineage[1:])
    kept = [r["id"] for r in lineage[1:] if r["evicted_in"] is None]
    assert sorted(kept) == sorted(uninterrupted["population"])
    for name in (FITNESS_PLOT, PARAMS_PLOT):
        assert os.path.getsize(os.path.join(run_dir, name)) > 1000
    saved = torch.load(os.path.join(run_dir, CHAMPION_NAME), map_location="cpu", weights_only=True)
    network = models.build_from_config(saved["model_kind"], saved["model_config"])
    network.load_state_dict(saved["model"])
    assert saved["result"]["champion"] in uninterrupted["population"]
    assert 0.0 <= saved["result"]["test_top1"] <= 100.0
    metrics = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert sum(1 for m in metrics if "train_loss" in m) == uninterrupted["epochs"] == 1 + 5 * 2 + 1


def stop_during(monkeypatch, stage: str, after_steps: int):
    """SIGTERM arrives at the ``after_steps``-th training step of the first training of ``stage``."""
    real = engine.train_one_epoch
    fired = []

    def train_one_epoch(*args, **kwargs):
        stop = kwargs["stop"]
        if kwargs["phase"] == stage and not fired:
            fired.append(True)
            steps = []

            def requested(device):
                steps.append(1)
                if len(steps) == after_steps:
                    stop.signal_name = "SIGTERM"
                return stop.signal_name is not None

            stop.requested = requested
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", train_one_epoch)


@pytest.mark.parametrize("stage, after_steps", [("generations", 2), ("generations", 4), ("final", 3)],
                         ids=["mid-epoch of a generation", "end of an epoch of a generation", "final training"])
def test_a_stopped_search_resumes_to_the_same_final_population(uninterrupted, tmp_path, monkeypatch, capsys,
                                                                stage, after_steps):
    with monkeypatch.context() as patch:
        stop_during(patch, stage, after_steps)
        assert evolve.cli(tiny_argv(tmp_path)) == 75
    assert "--resume auto" in capsys.readouterr().err
    saved = checkpoint.load_checkpoint(tmp_path / "digits" / "tiny" / "seed_5" / "checkpoint.pth")
    assert [record["stage"] for record in saved["in_flight"].values()] == [stage]

    resumed = evolve.main(evolve.get_args_parser().parse_args(tiny_argv(tmp_path, "--resume", "auto")))
    assert resumed["population"] == uninterrupted["population"]
    strip = ("seconds",)
    assert ([{k: v for k, v in r.items() if k not in strip} for r in resumed["lineage"]]
            == [{k: v for k, v in r.items() if k not in strip} for r in uninterrupted["lineage"]])
    assert {k: v for k, v in resumed["final"].items() if k != "final_seconds"} == \
        {k: v for k, v in uninterrupted["final"].items() if k != "final_seconds"}
    final_a = torch.load(os.path.join(resumed["run_dir"], CHAMPION_NAME), weights_only=True)["model"]
    final_b = torch.load(os.path.join(uninterrupted["run_dir"], CHAMPION_NAME), weights_only=True)["model"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_b)


BAD_INPUTS = [
    (["--population_size", "1"], "--population_size"),
    (["--tournament_fraction", "0"], "--tournament_fraction"),
    (["--tournament_fraction", "1.5"], "--tournament_fraction"),
    (["--mutations", "wider,narrower"], "narrower"),
    (["--val_split", "0"], "--val_split"),
    (["--mutations", "skip_connection"], "skip"),
    (["--num_cells", "5"], "cells"),
    (["--generations", "-1"], "--generations"),
    (["--lr", "0"], "--lr"),
]


@pytest.mark.parametrize("flags, needle", BAD_INPUTS, ids=[" ".join(f) for f, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_sentence_and_writes_nothing(tmp_path, capsys, flags, needle):
    try:
        status = evolve.cli(tiny_argv(tmp_path / "runs", *flags))
    except SystemExit as exit:  # a range refused while parsing: argparse's usage line, then the sentence
        status = exit.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert needle in err[-1] and "error:" in err[-1] and "Traceback" not in "\n".join(err)
    assert not os.path.exists(tmp_path / "runs")


def test_individuals_report_finite_fitness(uninterrupted):
    assert all(math.isfinite(r["fitness"]) and 0 <= r["fitness"] <= 100 for r in uninterrupted["lineage"])


def test_the_command_line_is_checked_before_torch_loads():
    code = "import sys, evolution.cli, evolve; assert 'torch' not in sys.modules, sorted(sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_parser_offers_the_mutations_operators_define():
    assert choices.MUTATIONS == MUTATIONS


def test_every_numeric_flag_of_evolve_states_a_checked_range():
    from test_flags import unchecked_numeric_flags

    assert unchecked_numeric_flags("evolve.py", evolve.get_args_parser) == []


# --------------------------------------------------------------------------- repeats, budgets, strategies


def test_no_two_children_of_one_parent_are_the_same_network_while_another_can_be_drawn():
    for seed in range(6):  # from the one-layer base, wider_kernel and deeper each make exactly one network
        search = tiny_search(mutations=["wider_kernel", "deeper"], population_size=2, generations=0, seed=seed)
        children = run_fake(search)[1:]
        assert children[0].individual.config != children[1].individual.config, seed


def test_a_child_is_trained_again_only_when_every_draw_repeats_one():
    search = tiny_search(mutations=["wider_kernel"], population_size=2, generations=0)
    children = run_fake(search)[1:]
    assert children[0].individual.config == children[1].individual.config


def test_children_over_the_parameter_budget_are_drawn_again():
    budget = 600
    assert max(t.individual.params for t in run_fake(tiny_search(generations=6))) > budget  # without it
    tasks = run_fake(tiny_search(max_params=budget, generations=6))
    assert len(tasks) == 1 + 3 + 6
    assert all(t.individual.params <= budget for t in tasks)


def test_a_budget_no_child_of_the_base_fits_is_one_sentence():
    from models.cellnet import parameter_count

    search = tiny_search(max_params=parameter_count(tiny_search().base_config))
    run_fake(search, tasks=1)
    with pytest.raises(ConfigError, match="no child of the base network fits the budget.*--max_params"):
        search.next_task()


def test_when_no_child_fits_the_budget_any_more_the_search_ends_and_the_champion_trains():
    search = tiny_search(max_params=400, generations=6)
    tasks = run_fake(search)
    assert len(tasks) < 1 + 3 + 6 and search.ended_early is not None
    assert search.next_task().stage == "final"


def flops_individual(id_: int, fitness: float, flops: int) -> Individual:
    ind = individual(id_, fitness)
    ind.flops = flops
    return ind


def test_pareto_objective_keeps_the_front_and_evicts_a_dominated_individual():
    front = [flops_individual(0, 90.0, 900), flops_individual(1, 80.0, 100), flops_individual(2, 89.0, 880)]
    population = Population(3, front, objective="pareto")
    assert population.add(flops_individual(3, 70.0, 200)).id == 3  # dominated by 1: it leaves
    assert population.add(flops_individual(4, 75.0, 50)).id == 2  # all on the front: 2, crowded beside 0, leaves
    assert sorted(m.id for m in population.members) == [0, 1, 4]


def test_pareto_tournament_prefers_the_front_over_a_more_accurate_dominated_one():
    # 1 dominates 0 (more accurate, cheaper); 2 is on the front but less accurate than 0
    population = Population(3, [flops_individual(0, 80.0, 500), flops_individual(1, 85.0, 400),
                                flops_individual(2, 50.0, 10)], objective="pareto")
    for seed in range(10):
        winner, drawn = population.select(2 / 3, torch.Generator().manual_seed(seed))
        assert winner.id != 0 or drawn == [0], (seed, drawn)


def test_aging_evicts_the_oldest_whatever_its_fitness():
    population = Population(2, [individual(0, 99.0), individual(1, 10.0)], eviction="oldest")
    assert population.add(individual(2, 5.0)).id == 0


def test_under_aging_the_champion_is_the_best_ever_trained_with_its_weights_kept():
    search = tiny_search(strategy="aging", generations=6)
    run_fake(search)
    best = max(search.lineage[1:], key=lambda ind: (ind.fitness, -ind.id))
    final = search.next_task()
    assert final.individual.id == best.id
    assert all(torch.equal(a, b) for a, b in zip(final.model.state_dict().values(), best.state.values()))
    kept = {ind.id for ind in search.lineage if ind.state}
    assert kept == {m.id for m in search.population.members} | {best.id}


def test_random_search_draws_parents_without_a_tournament():
    search = tiny_search(strategy="random", generations=4)
    run_fake(search, tasks=5)
    assert len(search.breeder.last_tournament) == 1


def test_a_finished_search_resumed_into_a_new_folder_writes_champion_lineage_and_args(uninterrupted, tmp_path):
    latest = os.path.join(uninterrupted["run_dir"], "checkpoint.pth")
    resumed = evolve.main(evolve.get_args_parser().parse_args(tiny_argv(tmp_path, "--resume", latest)))
    assert resumed["run_dir"] != uninterrupted["run_dir"]
    for name in (CHAMPION_NAME, LINEAGE_FILE, "args.json", "checkpoint.pth"):
        assert os.path.isfile(os.path.join(resumed["run_dir"], name)), name
    assert read_lineage(os.path.join(resumed["run_dir"], LINEAGE_FILE)) == \
        read_lineage(os.path.join(uninterrupted["run_dir"], LINEAGE_FILE))
    new = torch.load(os.path.join(resumed["run_dir"], CHAMPION_NAME), weights_only=True)
    old = torch.load(os.path.join(uninterrupted["run_dir"], CHAMPION_NAME), weights_only=True)
    assert new["result"] == old["result"] and all(torch.equal(new["model"][k], old["model"][k]) for k in old["model"])


# --------------------------------------------------------------------------- a Wide-ResNet base, cost-aware


WRN_SEARCH = ["--base", "wrn", "--wrn_depth", "10", "--wrn_width", "1", "--recalibrate_bn", "2",
              "--strategy", "aging", "--objective", "pareto", "--max_params", "120000",
              "--mutations", "wider,deeper,wider_kernel"]


@pytest.fixture(scope="module")
def wrn_search(tmp_path_factory):
    return evolve.main(evolve.get_args_parser().parse_args(tiny_argv(tmp_path_factory.mktemp("wrn"), *WRN_SEARCH)))


def test_a_plain_wide_resnet_is_a_searchable_base(wrn_search):
    saved = torch.load(os.path.join(wrn_search["run_dir"], CHAMPION_NAME), weights_only=True)
    assert saved["model_kind"] == "plain_wrn"
    models.build_from_config(saved["model_kind"], saved["model_config"]).load_state_dict(saved["model"])
    assert {r["mutation"] for r in wrn_search["lineage"][1:]} <= {"wider", "deeper", "wider_kernel"}


def test_every_child_respects_the_parameter_budget(wrn_search):
    assert all(r["params"] <= 120000 for r in wrn_search["lineage"])


def test_recalibrate_bn_records_both_figures_right_after_each_mutation(wrn_search):
    for record in wrn_search["lineage"][1:]:
        after = record["after_mutation"]
        assert after["batches"] == 2 and 0 <= after["top1"] <= 100 and 0 <= after["top1_bn_recalibrated"] <= 100
    assert wrn_search["lineage"][0]["after_mutation"] == {}


def test_the_pareto_front_is_reported_and_plotted(wrn_search):
    front = wrn_search["pareto_front"]
    records = {r["id"]: r for r in wrn_search["lineage"]}
    for i in front:
        assert not any(r["fitness"] >= records[i]["fitness"] and r["flops"] <= records[i]["flops"]
                       and (r["fitness"], r["flops"]) != (records[i]["fitness"], records[i]["flops"])
                       for r in wrn_search["lineage"])
    assert os.path.getsize(os.path.join(wrn_search["run_dir"], PARETO_PLOT)) > 1000

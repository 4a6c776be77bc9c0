"""The training plan (SPEC section 5): which phase runs in each epoch, what trains, and the lr."""

from __future__ import annotations

import json
import math

import pytest

import main
from mixturegrowth.lr import PRE_GROWTH_LR_MIN, cosine_lr
from mixturegrowth.plan import PHASES, build_plan
from utils import ConfigError

PAPER = "--template_size 0.5,0.5,1 --growth_epochs 200 --ensemble_train_epochs 200 --epochs 440"
# scripts/cifar/template_mixing/ours.sh adds these (the steps flags are unused with cosine).
PAPER_SCRIPT = PAPER + " --reset_scheduler --schedule 30 60 90 --gammas 0.2 0.2 0.2"
SMALL = "--growth_epochs 20 --ensemble_train_epochs 10 --epochs 50"


def plan_for(flags: str):
    return build_plan(main.get_args_parser().parse_args(flags.split()))


def lrs(plan) -> list[float]:
    return [e.lr for e in plan]


# --- phases ---------------------------------------------------------------------------


def test_paper_command_runs_member_0_then_member_1_then_grown():
    plan = plan_for(PAPER_SCRIPT)
    assert len(plan) == 440
    assert plan.phase_ranges() == [("member_0", 0, 199), ("member_1", 200, 399), ("grown", 400, 439)]
    assert (plan[0].forward_member, plan[200].forward_member, plan[400].forward_member) == (0, 1, None)
    assert [e.epoch for e in plan if e.grow_before] == [400]
    assert (plan.member_1_epoch, plan.growth_epoch) == (200, 400)
    assert [e.epoch for e in plan if e.phase_starts] == [0, 200, 400]
    assert {e.phase_index for e in plan} == {0, 1, 2}
    assert all(PHASES[e.phase_index] == e.phase for e in plan)


def test_member_0_loss_weight_applies_in_the_first_phase():
    plan = plan_for(PAPER)
    assert (plan[0].trained_members, plan[0].loss_weights) == ((0,), (0.1,))
    assert (plan[200].trained_members, plan[200].loss_weights) == ((1,), (1.0,))
    assert (plan[400].trained_members, plan[400].loss_weights) == ((), ())


def test_train_both_members_trains_members_0_and_1_in_the_second_phase():
    plan = plan_for(PAPER + " --train_both_members --member_0_loss_weight 0.3")
    assert plan[0].trained_members == (0,)
    assert (plan[250].trained_members, plan[250].loss_weights) == ((0, 1), (0.3, 1.0))
    assert plan[250].forward_member == 1


def test_no_growth_is_a_single_plain_phase():
    plan = plan_for("--growth_epochs -1 --epochs 30 --train_both_members --reset_scheduler")
    assert plan.phase_ranges() == [("plain", 0, 29)]
    assert all(e.forward_member is None and e.trained_members == () for e in plan)
    assert plan.growth_epoch is None and plan.member_1_epoch is None
    assert not any(e.grow_before for e in plan)
    expected = [cosine_lr(t, t_initial=30, base_lr=0.1, lr_min=1e-6, warmup_t=2, warmup_lr_init=1e-5)
                for t in range(30)]
    assert lrs(plan) == expected


def test_empty_phases_are_left_out():
    plan = plan_for("--growth_epochs 0 --ensemble_train_epochs 5 --epochs 10")
    assert plan.phase_ranges() == [("member_1", 0, 4), ("grown", 5, 9)]
    plan = plan_for("--growth_epochs 5 --ensemble_train_epochs 0 --epochs 10")
    assert plan.phase_ranges() == [("member_0", 0, 4), ("grown", 5, 9)]
    assert plan[5].grow_before and plan.member_1_epoch is None


def test_fresh_optimizer_for_member_1_and_optionally_at_growth():
    assert [e.epoch for e in plan_for(PAPER) if e.new_optimizer] == [0, 200]
    plan = plan_for(PAPER + " --reset_optimizer_growing")
    assert [e.epoch for e in plan if e.new_optimizer] == [0, 200, 400]


def test_warmup_01_growing_trains_only_members_01_coefficients_in_the_first_grown_epochs():
    plan = plan_for(SMALL + " --warmup_01_growing 3")
    growth = plan.growth_epoch
    assert [e.epoch for e in plan if e.only_member_01_coefficients] == [growth, growth + 1, growth + 2]
    assert not any(e.only_member_01_coefficients for e in plan_for(SMALL))


def test_plan_index_outside_the_run_is_an_error():
    plan = plan_for(SMALL)
    with pytest.raises(IndexError):
        plan[50]
    with pytest.raises(IndexError):
        plan[-1]


# --- learning rate before growth ------------------------------------------------------


def test_cosine_warms_up_from_1e5_then_decays_to_the_floor():
    rates = lrs(plan_for(PAPER_SCRIPT))
    assert rates[0] == pytest.approx(1e-5)
    assert rates[1] == pytest.approx((1e-5 + 0.1) / 2)
    assert rates[2] == pytest.approx(0.1, rel=1e-3)
    member_0 = rates[2:200]
    assert all(a > b for a, b in zip(member_0, member_0[1:]))
    assert 1e-6 < rates[199] < 1e-5


def test_reset_scheduler_restarts_the_cosine_when_member_1_starts():
    rates = lrs(plan_for(PAPER_SCRIPT))
    assert rates[200] == rates[0]
    assert rates[200:400] == rates[0:200]


def test_reset_scheduler_member_1_cosine_lasts_ensemble_train_epochs():
    rates = lrs(plan_for(SMALL + " --reset_scheduler"))
    assert rates[20:30] == [cosine_lr(t, t_initial=10, base_lr=0.1, lr_min=1e-6, warmup_t=2,
                                      warmup_lr_init=1e-5) for t in range(10)]


def test_lr_schedule_as_member_0_gives_member_1_member_0s_length():
    rates = lrs(plan_for(SMALL + " --reset_scheduler --lr_schedule_as_member_0"))
    assert rates[20:30] == rates[0:10]


def test_without_reset_scheduler_member_1_trains_at_constant_learning_rate():
    # Reference behaviour: member 1 gets a new optimizer; the member-0 cosine keeps driving the old one.
    rates = lrs(plan_for(PAPER + " --learning_rate 0.05"))
    assert set(rates[200:400]) == {0.05}


def test_cosine_warmup_length_follows_the_flag():
    rates = lrs(plan_for(SMALL + " --reset_scheduler --cosine_lr_warmup 4"))
    for start in (0, 20):
        assert rates[start:start + 4] == pytest.approx([1e-5 + t * (0.1 - 1e-5) / 4 for t in range(4)])


# --- learning rate after growth -------------------------------------------------------


def test_growth_starts_four_cosine_cycles_each_peaking_at_half_the_previous():
    rates = lrs(plan_for(PAPER_SCRIPT))
    grown = rates[400:]
    assert grown[0] == pytest.approx(1e-5)  # one warm-up epoch from 1e-5
    assert grown[1] == pytest.approx(3e-5 + 0.5 * (1e-4 - 3e-5) * (1 + math.cos(math.pi / 10)))
    peaks = [grown[10], grown[20], grown[30]]  # cycles of (440 - 400) // 4 = 10 epochs
    assert peaks == pytest.approx([5e-5, 2.5e-5, 1.25e-5])
    for cycle in (grown[1:10], grown[10:20]):  # cycles peaking above the floor decay towards it
        assert all(a > b >= 3e-5 for a, b in zip(cycle, cycle[1:]))
    # a cycle peaking below --lr_growing_min rises from its peak towards the floor
    assert all(a < b < 3e-5 for a, b in zip(grown[30:39], grown[31:40]))


def test_growth_cycles_that_do_not_divide_the_grown_epochs_end_at_the_floor():
    plan = plan_for("--growth_epochs 20 --ensemble_train_epochs 10 --epochs 47"
                    " --reset_lr_scheduler_growing 3")
    grown = lrs(plan)[30:]  # 17 grown epochs: 3 cycles of 5, then the floor
    assert grown[5] == pytest.approx(5e-5) and grown[10] == pytest.approx(2.5e-5)
    assert grown[15:] == [3e-5, 3e-5]


def test_growth_without_warmup_starts_at_lr_growing():
    rates = lrs(plan_for(SMALL + " --lr_warmup_growing 0 --lr_growing 0.002"))
    assert rates[30] == 0.002


def test_one_cycle_after_growth_continues_member_1s_cosine():
    # --reset_lr_scheduler_growing none: member 1's cosine spans member 1 and the grown phase;
    # the growth epoch itself trains at --lr_growing (reference behaviour).
    rates = lrs(plan_for(SMALL + " --reset_scheduler --reset_lr_scheduler_growing none"))
    cosine = [cosine_lr(t, t_initial=30, base_lr=0.1, lr_min=1e-6, warmup_t=2, warmup_lr_init=1e-5)
              for t in range(30)]
    assert rates[30] == 1e-4
    assert rates[20:30] + rates[31:] == cosine[:10] + cosine[11:]


def test_steps_schedule_counts_global_epochs_with_two_reference_exceptions():
    flags = SMALL + " --scheduler_type steps --schedule 5 25 40 --gammas 0.5 0.5 0.5"
    rates = lrs(plan_for(flags))
    expected = [0.1 * 0.5 ** sum(e >= s for s in (5, 25, 40)) for e in range(50)]
    expected[20] = 0.1  # member 1's fresh optimizer starts at --learning_rate
    expected[30] = 1e-4  # the growth epoch trains at --lr_growing
    assert rates == pytest.approx(expected)
    assert lrs(plan_for(flags + " --reset_scheduler"))[20] == pytest.approx(0.05)


def test_no_scheduler_keeps_learning_rate_then_lr_growing():
    rates = lrs(plan_for(SMALL + " --scheduler_type none --lr_growing 0.003"))
    assert rates == [0.1] * 30 + [0.003] * 20


def test_cosine_lr_matches_the_timm_formula():
    kw = dict(t_initial=10, base_lr=1.0, lr_min=0.1, warmup_t=2, warmup_lr_init=0.0)
    assert cosine_lr(1, **kw) == 0.5
    assert cosine_lr(5, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))
    assert cosine_lr(10, **kw) == 0.1  # past cycle_limit=1: the floor
    assert cosine_lr(13, **kw, cycle_limit=2, cycle_decay=0.5) == pytest.approx(
        0.1 + 0.5 * (0.5 - 0.1) * (1 + math.cos(math.pi * 3 / 10)))
    with pytest.raises(ValueError):
        cosine_lr(0, **{**kw, "t_initial": 0})


# --- bad configurations ---------------------------------------------------------------


@pytest.mark.parametrize("flags, names", [
    ("--growth_epochs 200 --ensemble_train_epochs 200 --epochs 390",
     ("--growth_epochs", "--ensemble_train_epochs", "--epochs")),
    ("--growth_epochs 200 --ensemble_train_epochs 200 --epochs 400",
     ("--growth_epochs", "--ensemble_train_epochs", "--epochs")),
    ("--growth_epochs 100,200 --epochs 440", ("--growth_epochs takes one epoch",)),
    ("--growth_epochs -2", ("--growth_epochs",)),
    ("--ensemble_train_epochs -1", ("--ensemble_train_epochs",)),
    ("--scheduler_type steps", ("--scheduler_type steps", "--schedule", "--gammas")),
    ("--scheduler_type steps --schedule 30 60 --gammas 0.2", ("--schedule", "--gammas")),
    ("--scheduler_type steps --schedule 60 30 --gammas 0.2 0.2", ("--schedule",)),
    ("--growth_epochs 10 --ensemble_train_epochs 10 --epochs 23 --reset_lr_scheduler_growing 4",
     ("--reset_lr_scheduler_growing",)),
    (SMALL + " --scheduler_type none --reset_scheduler", ("--reset_scheduler", "--scheduler_type none")),
    (SMALL + " --lr_schedule_as_member_0", ("--lr_schedule_as_member_0", "--reset_scheduler")),
    ("--growth_epochs 20 --ensemble_train_epochs 5 --epochs 30 --warmup_01_growing 5",
     ("--warmup_01_growing", "--ensemble_train_epochs")),
    ("--cosine_lr_warmup -1", ("--cosine_lr_warmup",)),
    ("--epochs 0 --growth_epochs -1", ("--epochs",)),
])
def test_impossible_configurations_are_one_sentence_config_errors(flags, names):
    with pytest.raises(ConfigError) as error:
        plan_for(flags)
    message = str(error.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_steps_flags_are_ignored_with_the_cosine_schedule():
    # the paper's CIFAR script passes --schedule/--gammas while running cosine
    assert lrs(plan_for(PAPER_SCRIPT)) == lrs(plan_for(PAPER + " --reset_scheduler"))


# --- printing and saving ---------------------------------------------------------------


def test_to_dict_is_json_and_format_names_every_phase():
    plan = plan_for(PAPER_SCRIPT)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["growth_epoch"] == 400 and data["member_1_epoch"] == 200
    assert [p["phase"] for p in data["phases"]] == ["member_0", "member_1", "grown"]
    assert len(data["epochs"]) == 440
    assert data["epochs"][250]["trained_members"] == [1] and data["epochs"][250]["lr"] == plan[250].lr
    text = plan.format()
    for phase in ("member_0", "member_1", "grown"):
        assert phase in text
    assert "400" in text
    assert "plain" in plan_for("--growth_epochs -1 --epochs 5").format()


def test_one_cycle_after_growth_without_member_1_continues_member_0s_cosine():
    # Reference behaviour: with no member-1 phase the member-0 cosine (length 5, finished) goes on
    # driving the optimizer after the growth epoch, so the grown net trains at its 1e-6 floor.
    flags = "--growth_epochs 5 --ensemble_train_epochs 0 --epochs 10 --reset_lr_scheduler_growing none"
    rates = lrs(plan_for(flags))
    assert rates[5:] == [1e-4, 1e-6, 1e-6, 1e-6, 1e-6]
    rates = lrs(plan_for(flags + " --reset_optimizer_growing"))
    assert rates[5:] == [1e-4] * 5


def _annealed(flags):
    return main.get_args_parser().parse_args(flags.split() + ["--anneal_each_phase"])


def test_anneal_each_phase_gives_every_phase_its_own_cosine_to_the_floor():
    args = _annealed("--growth_epochs 4 --ensemble_train_epochs 4 --epochs 12 --cosine_lr_warmup 0 "
                     "--lr_warmup_growing 0 --lr_growing 0.05 --lr_growing_min 1e-6")
    rates = [e.lr for e in build_plan(args)]
    for first, length, peak in ((0, 4, 0.1), (4, 4, 0.1), (8, 4, 0.05)):
        expected = [cosine_lr(t, t_initial=length, base_lr=peak, lr_min=PRE_GROWTH_LR_MIN, warmup_t=0,
                              warmup_lr_init=1e-5) for t in range(length)]
        assert rates[first:first + length] == pytest.approx(expected)
    # Each phase ends near its floor, not half-way down a longer cosine.
    assert rates[3] < 0.02 and rates[7] < 0.02 and rates[11] < 0.01


def test_anneal_each_phase_restarts_net2nets_cosine_at_widening():
    args = _annealed("--arch normalwrn --growth_epochs -1 --epochs 10 --net2net_epoch 6 --cosine_lr_warmup 0 "
                     "--lr_warmup_growing 0 --lr_growing 0.05")
    rates = [e.lr for e in build_plan(args)]
    assert rates[0] == pytest.approx(0.1) and rates[5] < 0.01
    assert rates[6] == pytest.approx(0.05) and rates[9] < rates[6]

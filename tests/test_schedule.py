"""Where checkpoints fall and at which learning rate (exoflow.schedule), torch-free.

The reference here is an independent transcription of the original code's loop
(exact-optimization src/align_stage/train.py): a per-process DataLoader over a
DistributedSampler's share, a micro-step counter ``step``, a save whenever ``(step + 1) %
save_step_interval == 0``, an exit when ``(step + 1) % max_iter_step == 0``, and DeepSpeed
stepping the optimizer every ``gradient_accumulation_steps`` micro-steps; the cosine is
transformers' ``get_cosine_schedule_with_warmup`` over ``num_train_epochs *
ceil(len(train_dataloader) / gradient_accumulation_steps)`` steps, written out by hand.
"""

import math

import pytest
import yaml

from exoflow.config import AlignParams
from exoflow.errors import ParamsError
from exoflow.plan import Plan
from exoflow.schedule import checkpoint_schedule, lr_at
from tests.helpers import ROOT

HELPFUL_BASE_TRAIN = 43_835  # helpful-base train prompts, as the issue counts them


def original_saves(num_prompts, processes, micro, accum, num_save_checkpoint, max_iter_step):
    """(optimizer steps completed at each save, micro-steps run) of the original's loop."""
    per_process = math.ceil(num_prompts / processes)  # DistributedSampler pads every share
    n_loader = math.ceil(per_process / micro)  # DataLoader, drop_last=False
    interval = 1 if n_loader < num_save_checkpoint else n_loader // num_save_checkpoint
    saves = []
    for step in range(n_loader):  # num_train_epochs = 1
        optimizer_steps = (step + 1) // accum  # DeepSpeed steps at accumulation boundaries
        if (step + 1) % interval == 0:
            saves.append(optimizer_steps)
        if (step + 1) % max_iter_step == 0:
            break
    return saves, n_loader


def cosine_by_hand(step, peak, horizon):
    """The rate optimizer step ``step`` applies: the scheduler has stepped ``step - 1`` times."""
    return peak * 0.5 * (1 + math.cos(math.pi * (step - 1) / horizon))


def paper_plan() -> Plan:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    return Plan(cfg)


def test_config_yaml_is_the_original_schedule_on_helpful_base():
    plan = paper_plan()
    e = plan.cfg.engine
    assert e.num_processes == 4  # train_exo.sh: dev=0,1,2,3
    for run in plan.align_runs():
        p = plan.run_params(run)
        assert (p.batch_size, p.micro_batch_size, p.max_steps) == (128, 8, 175)
        sched = plan.checkpoint_schedule(run, HELPFUL_BASE_TRAIN)
        assert [c.step for c in sched] == list(range(17, 171, 17))
        assert [c.micro_step for c in sched] == list(range(68, 681, 68))
        # the cosine over one epoch: ceil(ceil(43835 / 4) / 8) = 1370 micro-batches, / 4
        assert math.ceil(math.ceil(HELPFUL_BASE_TRAIN / 4) / 8) == 1370
        for c in sched:
            assert c.lr == pytest.approx(cosine_by_hand(c.step, 1e-6, 343), rel=1e-12)
            assert c.epoch == pytest.approx(c.step * 128 / HELPFUL_BASE_TRAIN)
        # ckpt10 is trained at about half the peak rate, not near 0 as a cosine over 175 steps
        assert sched[-1].lr == pytest.approx(0.5115e-6, abs=5e-10)
    saves, _ = original_saves(HELPFUL_BASE_TRAIN, 4, 8, 4, 20, 700)
    assert saves[:10] == list(range(17, 171, 17)) and len(saves) == 10  # "the first 10"


@pytest.mark.parametrize("num_prompts,processes,micro,accum", [
    (10_000, 4, 8, 4),    # len 313, interval 15: not a multiple of the accumulation
    (5_003, 2, 4, 3),     # len 626, interval 31
    (43_835, 4, 8, 4),
    (20_011, 1, 16, 8),   # len 1251, interval 62
])
def test_steps_follow_the_original_micro_step_counter(num_prompts, processes, micro, accum):
    saves, n_loader = original_saves(num_prompts, processes, micro, accum, 20, 10 ** 9)
    horizon = math.ceil(n_loader / accum)
    p = AlignParams.from_dict(dict(loss="exo-rw", data="rm_labels", lr=1e-6, max_steps=horizon,
                                   batch_size=micro * processes * accum, micro_batch_size=micro,
                                   saves_per_epoch=20, checkpoints=10, lr_horizon="epoch"))
    sched = checkpoint_schedule(p, num_prompts, processes)
    assert [c.step for c in sched] == saves[:10]
    assert [c.lr for c in sched] == pytest.approx(
        [cosine_by_hand(s, 1e-6, horizon) for s in saves[:10]], rel=1e-12)


def test_save_every_and_the_max_steps_horizon():
    p = AlignParams.from_dict(dict(loss="dpo-rw", data="rm_labels", lr=1e-4, batch_size=32,
                                   micro_batch_size=32, max_steps=60, save_every=20))
    sched = checkpoint_schedule(p, 3000, 1)
    assert [c.step for c in sched] == [20, 40, 60]
    assert [c.lr for c in sched] == pytest.approx([cosine_by_hand(s, 1e-4, 60)
                                                   for s in (20, 40, 60)])
    assert sched[0].micro_step is None and sched[1].epoch == pytest.approx(40 * 32 / 3000)


def test_lr_at_matches_transformers_schedulers():
    """lr_at against the schedulers themselves (the only torch here: a skip without it)."""
    torch = pytest.importorskip("torch")
    from transformers import get_scheduler

    for name, warmup in (("cosine", 0), ("cosine", 3), ("linear", 2), ("constant", 0)):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        sched = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=13)
        for step in range(1, 12):
            assert lr_at(step, 0.5, 13, warmup, name) == pytest.approx(
                opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15), (name, step)
            opt.step()
            sched.step()


def test_schedules_that_cannot_be_are_refused():
    base = dict(loss="exo-rw", data="rm_labels", lr=1e-6, batch_size=128, micro_batch_size=8)
    with pytest.raises(ParamsError, match="exactly one of save_every .* and saves_per_epoch"):
        AlignParams.from_dict(dict(base, max_steps=175))
    with pytest.raises(ParamsError, match="exactly one"):
        AlignParams.from_dict(dict(base, max_steps=180, save_every=9, saves_per_epoch=20,
                                   checkpoints=10))
    with pytest.raises(ParamsError, match="saves_per_epoch needs checkpoints"):
        AlignParams.from_dict(dict(base, max_steps=175, saves_per_epoch=20))
    with pytest.raises(ParamsError, match="checkpoints goes with saves_per_epoch"):
        AlignParams.from_dict(dict(base, max_steps=180, save_every=9, checkpoints=10))
    p = AlignParams.from_dict(dict(base, max_steps=100, saves_per_epoch=20, checkpoints=10))
    with pytest.raises(ParamsError, match=r"ckpt10 at optimizer step 170, after max_steps 100 "
                                          r"\(5 checkpoint\(s\) fit\)"):
        checkpoint_schedule(p, HELPFUL_BASE_TRAIN, 4)
    with pytest.raises(ParamsError, match="ckpt1 would be the SFT model"):
        checkpoint_schedule(p, 500, 4)  # 16 micro-batches: a save every one, 4 per step
    with pytest.raises(ParamsError, match="one epoch of 3000 prompts is 24 optimizer step"):
        checkpoint_schedule(AlignParams.from_dict(dict(
            base, max_steps=30, saves_per_epoch=20, checkpoints=2, lr_horizon="epoch")), 3000, 4)

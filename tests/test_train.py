"""train.py and the training package: config, optimizers, schedules, the recipe's options, the LR range
test, runs from the command line and from Python, divergence, and user mistakes (resuming: test_resume.py)."""
import csv
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import nets
import pipeline
import train
from common import cli
from common.cli import UsageError
from nets import checkpoint
from tests.conftest import ROOT, digest, fails, run_script, same_history, same_weights
from training import Config, config, find_lr, fit, loop, lr_finder, runlog
from training.build import build_optimizer, build_scheduler, parameter_groups
from training.ema import EMA
from training.guard import nonfinite
from training.setup import split
from training.step import GradientNoise, logits_of, train_step

# Tiny but real: 96 images in batches of 32 (3 steps an epoch), 40 test images, the precision auto picks.
TINY = ["--device", "cpu", "--batch-size", "32", "--limit-train", "96",
        "--limit-test", "40", "--ema", "0"]


def weights(path):
    return checkpoint.load(path)["model"]


# ------------------------------------------------------------------------------------------ config
def test_lr_follows_the_batch_unless_given_and_precision_follows_the_cpu(monkeypatch):
    assert config.resolved({"batch_size": 128}).lr == pytest.approx(0.2 * 128 / 512)
    assert config.resolved({"batch_size": 128, "optimizer": "adamw"}).lr == pytest.approx(2e-3 / 4)
    assert config.resolved({"batch_size": 128, "lr": 0.3}).lr == 0.3
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun: the global batch is 4 x 128
    assert config.resolved({"batch_size": 128}).lr == pytest.approx(0.2)
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(config.devices, "cpu_has_native_bf16", lambda: native)
        assert config.resolved({"device": "cpu"}).precision == expected
        assert config.resolved({"device": "cpu", "precision": "fp16"}).precision == "fp16"


def test_a_config_built_in_python_is_checked_like_the_command_line_and_then_frozen():
    with pytest.raises(UsageError, match=r"^--epochs must be > 0 \(got 0\)$"):
        Config(epochs=0)
    with pytest.raises(UsageError, match=r"^--model 'resnet50': choose from resnet18, resnet34$"):
        Config(model="resnet50")
    with pytest.raises(UsageError, match="expected a number or 'auto'"):
        Config(lr="fast")
    cfg = Config(epochs=3)
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError
        cfg.epochs = 4
    resolved = config.resolve(Config(model="resnet34", batch_size=128))
    assert (resolved.out, resolved.lr, resolved.max_batch_size) == ("runs/resnet34", 0.05, 1024)
    assert config.resolve(Config(lr="auto")).lr == "auto"  # the range test decides it


def test_help_shows_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--ema EMA", "--tta, --no-tta", "--grad-noise", "--batch-ramp", "--zero-init-residual",
                 "--norm-bias-decay", "--label-smoothing"):
        assert flag in text
    assert "label smoothing (default 0.0)" in text and "(default 20)" in text


# ------------------------------------------------------------------------------ optimizers, schedules
def tiny_batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)


def fp32_step_parts():
    return torch.amp.GradScaler("cpu", enabled=False), torch.autocast("cpu", enabled=False)


@pytest.mark.parametrize("optimizer", config.OPTIMIZERS)
def test_every_optimizer_trains_and_changes_weights(optimizer):
    cfg = config.resolved({"optimizer": optimizer, "momentum": 0.0 if optimizer == "sgd" else 0.9,
                        "zero_init_residual": False})
    model = nets.create("resnet18")
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(cfg, model, torch.device("cpu"))
    scaler, amp = fp32_step_parts()
    x, y = tiny_batch()
    losses = [float(train_step(model, opt, scaler, amp, x, y)[0]) for _ in range(2)]
    assert all(np.isfinite(losses))
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.param_groups[0]["lr"] == config.DEFAULT_LR[optimizer]


def test_batchnorm_and_biases_can_be_kept_out_of_weight_decay():
    model = nets.create("resnet18")
    decayed, free = parameter_groups(config.resolved({"norm_bias_decay": False}), model)
    assert decayed["weight_decay"] == 5e-4 and free["weight_decay"] == 0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decayed["params"])  # conv and linear weights
    assert len(free["params"]) == sum(1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)) * 2 + 1
    everything = parameter_groups(config.resolved({}), model)  # the default: decay on everything
    assert len(everything[0]["params"]) == len(list(model.parameters())) and not everything[1]["params"]


def test_zero_init_residual_starts_each_block_as_its_shortcut():
    model = nets.create("resnet18", zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, nets.resnet.BasicBlock)]
    assert len(blocks) == 8 and all(not b.bn2.weight.any() for b in blocks)
    assert all(b.bn1.weight.eq(1).all() for b in blocks)
    assert all(b.bn2.weight.eq(1).all() for b in nets.create("resnet18").modules()
               if isinstance(b, nets.resnet.BasicBlock))


def lrs_of(cfg, metric_per_epoch, steps=10):
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg, model, torch.device("cpu"))
    sched = build_scheduler(cfg, opt, steps)
    lrs = []
    for epoch in range(cfg.epochs):
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            if cfg.scheduler == "onecycle":
                sched.step()
        if cfg.scheduler == "plateau":
            sched.step(metric_per_epoch[epoch])
    return lrs


def test_onecycle_peaks_at_max_lr():
    cfg = config.resolved({"lr": 0.3, "epochs": 4})
    lrs = lrs_of(cfg, None)
    assert max(lrs) == pytest.approx(0.3)
    assert lrs[0] < 0.3 / 10 and lrs[-1] < 0.3 / 1000  # warm-up from low, anneal to near zero
    assert np.argmax(lrs) == pytest.approx(0.25 * len(lrs), abs=1)


def test_none_scheduler_keeps_lr():
    cfg = config.resolved({"lr": 0.05, "epochs": 2, "scheduler": "none"})
    assert set(lrs_of(cfg, None)) == {0.05}


def test_plateau_reduces_after_patience_and_rel_differs_from_abs():
    # The loss falls 0.0004 an epoch: progress for abs (1e-4), too little for rel (1e-3 x ~1.0).
    losses = [1.0 - 0.0004 * e for e in range(6)]
    base = {"lr": 0.1, "epochs": 6, "scheduler": "plateau", "plateau_patience": 1,
            "plateau_factor": 0.5, "val_split": 0.1}
    rel = lrs_of(config.resolved({**base, "plateau_threshold": 1e-3, "plateau_threshold_mode": "rel"}),
                 losses, steps=1)
    absolute = lrs_of(config.resolved({**base, "plateau_threshold": 1e-4, "plateau_threshold_mode": "abs"}),
                      losses, steps=1)
    # rel: epochs 1-2 are "flat" (> patience 1) -> halved for epoch 3; 0.9988 < 0.999 then counts.
    assert rel == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05]
    assert absolute == [0.1] * 6


def test_batch_ramp_grows_the_batch_where_plateau_would_cut_until_the_cap():
    cfg = config.resolved({"lr": 0.1, "scheduler": "plateau", "val_split": 0.1, "plateau_patience": 0,
                        "plateau_factor": 0.5, "batch_ramp": True, "batch_size": 16, "max_batch_size": 64})
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg, model, torch.device("cpu"))
    run = loop.Run(model, opt, None, None, 16, scheduler=build_scheduler(cfg, opt, 1))
    seen = []
    for val_loss in (1.0, 1.0, 1.0, 1.0, 1.0):  # no improvement: a cut every epoch after the first
        loop.ramp_or_cut(run, cfg, val_loss, train_images=1000, world=1)
        seen.append((run.batch_size, opt.param_groups[0]["lr"]))
    assert seen == [(16, 0.1), (32, 0.1), (64, 0.1), (64, 0.05), (64, 0.025)]  # cap 64: then the LR falls
    small = loop.Run(model, opt, None, None, 16, scheduler=build_scheduler(cfg, opt, 1))
    small.scheduler.step(1.0)
    loop.ramp_or_cut(small, cfg, 1.0, train_images=20, world=1)  # 32 would make no full batch of 20
    assert small.batch_size == 16


def test_limits_keep_every_class_in_its_share_and_the_test_subset_is_the_same_for_every_seed():
    labels = np.repeat(np.arange(10), 50)  # sorted by class, as image folders list their files
    data = type("D", (), {"train": (np.arange(500), labels), "test": (np.arange(500), labels)})
    parts = split(config.resolved({"limit_train": 100, "limit_test": 30}), data)
    assert np.bincount(parts["train"][1], minlength=10).tolist() == [10] * 10
    assert np.bincount(parts["test"][1], minlength=10).tolist() == [3] * 10
    other = split(config.resolved({"limit_train": 100, "limit_test": 30, "seed": 1}), data)
    assert np.array_equal(parts["test"][0], other["test"][0])  # runs of any seed are compared on it
    assert not np.array_equal(parts["train"][0], other["train"][0])
    held = split(config.resolved({"limit_train": 100, "val_split": 0.1}), data)  # val comes out of the 100
    assert (len(held["train"][0]), len(held["val"][0])) == (90, 10)
    assert set(held["train"][0]).isdisjoint(held["val"][0])
    both = np.concatenate([held["train"][1], held["val"][1]])
    assert np.bincount(both, minlength=10).tolist() == [10] * 10


def test_validation_split_is_deterministic_and_disjoint():
    n = 500
    data = type("D", (), {"train": (np.arange(n)[:, None], np.arange(n)),
                          "test": (np.zeros((10, 1)), np.zeros(10))})
    cfg = config.resolved({"val_split": 0.2, "seed": 5})
    a, b = split(cfg, data), split(cfg, data)
    assert np.array_equal(a["val"][1], b["val"][1]) and len(a["val"][1]) == 100
    assert set(a["val"][1]).isdisjoint(a["train"][1]) and len(a["train"][1]) == 400
    other = split(config.resolved({"val_split": 0.2, "seed": 6}), data)
    assert not np.array_equal(a["val"][1], other["val"][1])
    assert len(a["test"][1]) == 10  # test stays test


# ---------------------------------------------------------------------------- EMA, TTA, gradient noise
def test_ema_is_the_analytic_average_of_the_weights_after_k_steps():
    torch.manual_seed(0)
    model = nets.create("resnet18", num_classes=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ema = EMA(model, decay=0.9)
    expected = {k: v.clone().double() for k, v in model.state_dict().items()}
    scaler, amp = fp32_step_parts()
    x, y = tiny_batch()
    for step in range(12):
        train_step(model, opt, scaler, amp, x, y % 3)
        ema.update(step)
        d = min(0.9, (1 + step) / (10 + step))  # warm-up: 0.1, 0.18, ... until 0.9 from step 71
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()
    assert ema.decay_at(0) == 0.1 and ema.decay_at(80) == 0.9
    got = ema.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k].double(), v, rtol=1e-5, atol=1e-6)
    raw = model.state_dict()
    assert not torch.equal(got["fc.weight"], raw["fc.weight"])  # the average lags the weights
    assert torch.equal(got["stem.1.num_batches_tracked"], raw["stem.1.num_batches_tracked"])


def test_tta_averages_the_logits_of_the_image_and_its_mirror():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    x = torch.randn(2, 3, 4, 4)
    expected = (model(x) + model(torch.flip(x, dims=[3]))) / 2
    torch.testing.assert_close(logits_of(model, x, tta=True), expected)
    torch.testing.assert_close(logits_of(model, x, tta=False), model(x))
    assert not torch.allclose(expected, model(x))


def test_gradient_noise_variance_decays_as_specified_and_is_seeded_by_step():
    param = torch.nn.Parameter(torch.zeros(400_000))
    noise = GradientNoise([param], eta=0.3, seed=1, device="cpu")
    draws = []
    for step in range(3):
        param.grad = torch.zeros_like(param)
        noise.add()
        draws.append(param.grad.clone())
        assert param.grad.var().item() == pytest.approx(0.3 / (1 + step) ** 0.55, rel=0.02)
        assert abs(param.grad.mean().item()) < 0.01
    again = GradientNoise([param], eta=0.3, seed=1, device="cpu", step=2)  # as after --resume at step 2
    param.grad = torch.zeros_like(param)
    again.add()
    assert torch.equal(param.grad, draws[2]) and not torch.equal(draws[1] / noise.std(1), draws[2] / noise.std(2))


# ------------------------------------------------------------------------------------ LR range test
def test_suggestion_is_the_steepest_descent_of_a_known_curve():
    lrs = np.logspace(-6, 1, 200)
    centre = 10 ** -2.5  # the loss falls fastest (against log lr) here: a sigmoid step in log lr
    losses = 2.3 - 2.0 / (1 + np.exp(-3 * (np.log10(lrs) - np.log10(centre))))
    suggestion = lr_finder.steepest_descent(list(lrs), list(losses))
    assert abs(np.log10(suggestion) - np.log10(centre)) <= np.log10(lrs[1] / lrs[0]) + 1e-9
    shifted = lr_finder.steepest_descent(list(lrs), list(2.3 - 2.0 / (1 + np.exp(-3 * (np.log10(lrs) + 1)))))
    assert shifted == pytest.approx(0.1, rel=0.1)


def test_range_test_stops_when_the_loss_explodes():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(64, generator=g)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(xb, yb):
        loss = ((model(xb).squeeze(1) - yb) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    result = lr_finder.range_test(step, opt, iter(lambda: (x, y), None), steps=100)
    assert 10 < len(result.lrs) < 100, "the loss explodes before the end of the sweep and it stops"
    assert result.problem == "" and result.lrs[0] <= result.suggestion <= result.lrs[-1]


def sigmoid_curve(lrs, centre=10 ** -2.5, drop=2.0):
    return list(2.3 - drop / (1 + np.exp(-3 * (np.log10(lrs) - np.log10(centre)))))


@pytest.mark.parametrize("case, says", [
    ("descends", ""),
    ("flat", "the smoothed loss never fell by 5% (at best 0.9%) before it rose"),
    ("explodes at once", "the loss exploded after 12 of 200 steps, at LR"),
])
def test_the_range_test_says_when_its_curve_gives_no_usable_lr(case, says):
    lrs = list(np.logspace(-6, 1, 200))
    losses = {"flat": sigmoid_curve(lrs, drop=0.02)}.get(case, sigmoid_curve(lrs))
    kept = 12 if case == "explodes at once" else 200
    problem = lr_finder.verdict(lrs[:kept], losses[:kept], 200)
    assert problem.startswith(says) if says else problem == ""


def flat_test(steps=200):
    """A range test whose curve hardly falls: no usable LR, and not for lack of steps."""
    lrs = list(np.logspace(-6, 1, steps))
    losses = sigmoid_curve(lrs, drop=0.02)
    return lr_finder.RangeTest(lrs, losses, float("nan"), lr_finder.verdict(lrs, losses, steps))


def test_range_test_advice_is_one_rule_spoken_as_flags_on_the_command_line_and_as_fields_in_python():
    """The length rule is stated once (--help, the refusal); a flat curve's advice names what works
    (the default LR, given here as a number) in the reader's terms, without a new minimum."""
    assert config.LR_TEST_RULE in " ".join(config.Config.__dataclass_fields__["find_lr_steps"].metadata["help"]
                                          .split())
    with pytest.raises(UsageError) as python:
        Config(find_lr_steps=30, lr="auto")
    assert str(python.value) == (f"find_lr_steps=30: {config.LR_TEST_RULE}: give find_lr_steps=100 or more, or "
                                 "train without the test: drop lr='auto'")
    flat, cfg = flat_test(), Config(batch_size=128, lr="auto")
    words = lr_finder.advice(flat, cfg)
    assert "drop lr='auto' to train at the default LR, 0.05 here" in words and "give lr= a value" in words
    assert "find_lr_steps= above 200" in words and "or more" not in words
    spoken = []
    cli.run(lambda: spoken.append(lr_finder.advice(flat, cfg)))  # as under a script's main
    for phrase in ("drop --lr auto to train at the default LR, 0.05 here", "give --lr a value",
                   "(--find-lr-steps above 200)"):
        assert phrase in spoken[0]
    assert "=" not in spoken[0]
    exploded = lr_finder.RangeTest(flat.lrs[:12], flat.losses[:12], float("nan"), "exploded")
    assert "check the data" in lr_finder.advice(exploded, cfg) and "default LR" not in lr_finder.advice(exploded, cfg)


# ---------------------------------------------------------------------------------------- runs
def test_two_epoch_run_from_python_returns_its_result_and_writes_checkpoints_metrics_events(
        data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    result = fit(Config(data_dir=str(data_dir), out=str(out), epochs=2, val_split=0.2, device="cpu",
                        batch_size=32, limit_train=120, limit_test=40, ema=0.9))
    lines = capsys.readouterr().out.splitlines()
    assert "evaluated: raw and EMA weights, flip TTA" in lines[0]
    assert lines[1].split() == ["epoch", "lr", "train", "loss", "train", "acc", "val", "loss", "val", "acc",
                                "test", "loss", "test", "acc", "EMA", "acc", "img/s", "epoch", "s"]
    assert [line.split()[0] for line in lines[2:4]] == ["1", "2"]
    assert len({len(line) for line in lines[1:4]}) == 1, "rows are aligned with the header"
    assert all(len(cell.split(".")[1]) == 4 for cell in lines[2].split()[2:5:2]), "losses: 4 decimals"
    assert lines[-1] == result.summary and repr(result) == result.summary
    assert result.summary.startswith(f"done: final test acc {result.final_test_acc:.2%} (raw weights, flip TTA), ")
    assert re.search(r"\(EMA weights, flip TTA\) after 2 epochs; (AT CHANCE .*; )?best val acc", result.summary)
    assert "; wall time " in result.summary
    assert result.checkpoint == out / "last.pt" and result.best == out / "best.pt"
    assert result.config.lr == pytest.approx(0.2 * 32 / 512) and result.history[-1]["epoch"] == 2
    assert all(r["seconds"] > r["train_seconds"] > 0 for r in result.history), "wall time includes eval"
    state = checkpoint.load(out / "last.pt")
    assert state["epoch"] == 2 and state["step"] == 0 and len(state["history"]) == 2
    assert [r["test_count"] for r in state["history"]] == [40, 40]  # every test image exactly once
    assert [r["val_count"] for r in state["history"]] == [24, 24]  # 20 % of the 120 training images
    assert state["classes"][0] == "airplane" and state["config"]["model"] == "resnet18"
    assert len(state["lr_steps"]) == 2 * 3 and state["batch_size"] == 32
    # Each row's LR is its epoch's last step's: OneCycle ends at its floor (not back at its peak).
    assert [r["lr"] for r in state["history"]] == state["lr_steps"][2::3]
    assert state["history"][-1]["lr"] < 1e-3 * result.config.lr
    assert not same_weights(state["ema"], state["model"]) and "ema_test_acc" in state["history"][0]
    best = checkpoint.load(out / "best.pt")
    assert best["history"][-1]["val_acc"] == max(r["val_acc"] for r in state["history"])
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and "val_acc" in rows[0] and "ema_test_acc" in rows[0]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    torch.load(out / "last.pt", weights_only=True)  # plain types and tensors only


def test_a_run_builds_its_evaluation_loaders_once_not_every_epoch(data_dir, tmp_path, monkeypatch):
    """On a GPU each is a DALI pipeline and an upload of its images: built once, used by every epoch."""
    built, eval_loader = [], pipeline.Dataset.eval_loader

    def counting(data, part, spec):
        built.append(len(part[1]))
        return eval_loader(data, part, spec)

    monkeypatch.setattr(pipeline.Dataset, "eval_loader", counting)
    result = fit(Config(data_dir=str(data_dir), out=str(tmp_path / "run"), epochs=3, val_split=0.5, device="cpu",
                        batch_size=16, limit_train=32, limit_test=16, ema=0, tta=False))
    assert [(r["test_count"], r["val_count"]) for r in result.history] == [(16, 16)] * 3
    assert built == [16, 16]  # the test part's and the validation part's, once each


@pytest.mark.parametrize("raw, ema, images, says", [
    (0.10, None, 40, "AT CHANCE (raw weights): guessing 1 of 10 classes scores 2.5%-20.0% on 40 test images"),
    (0.20, 0.225, 40, "AT CHANCE (raw weights)"),  # 8 of 40 right: within guessing; 9 of 40 is not
    (0.12, 0.11, 10_000, ""),  # above the 9.4-10.6 % guessing gives on the full test set
    (0.10, 0.095, 10_000, "AT CHANCE (raw and EMA weights): guessing 1 of 10 classes scores 9.4%-10.6% on "
                          "10000 test images"),
])
def test_the_headline_says_when_a_final_accuracy_is_no_better_than_guessing(raw, ema, images, says):
    last = {"epoch": 1, "test_acc": raw, "test_count": images, **({"ema_test_acc": ema} if ema else {})}
    line = runlog.summary([last], tta=True, wall_seconds=1.0, classes=10)
    assert ("AT CHANCE" in line) == bool(says) and says in line
    assert line.endswith("; wall time 1.0 s") and line.startswith(f"done: final test acc {raw:.2%}")


def test_without_a_validation_split_no_best_checkpoint_is_chosen(trained_run):
    assert (trained_run / "last.pt").exists() and not (trained_run / "best.pt").exists()
    assert checkpoint.load(trained_run / "last.pt")["best_val_acc"] is None


def test_a_range_test_too_short_to_read_is_refused_before_it_runs(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(lr_finder, "search", lambda setup: pytest.fail("the test ran"))
    out = tmp_path / "lr"
    for flags in (["--find-lr"], ["--lr", "auto"]):
        err = fails(train.main, ["--data-dir", data_dir, "--out", out, *TINY, *flags, "--find-lr-steps", "30"],
                    capsys)
        assert err.startswith(f"error: --find-lr-steps 30: {config.LR_TEST_RULE}: give --find-lr-steps 100 or more")
    with pytest.raises(UsageError, match=r"^find_lr_steps=30: the LR range test needs 100 steps or more"):
        find_lr(Config(data_dir=str(data_dir), out=str(out), find_lr_steps=30))  # a notebook's call
    assert not out.exists()
    fit_only = Config(data_dir=str(data_dir), find_lr_steps=30)  # carried, never run: not refused
    assert fit_only.find_lr_steps == 30


def test_find_lr_writes_its_plot_and_says_when_the_curve_is_unusable(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(lr_finder, "range_test", lambda *a, **k: flat_test(100))
    out = tmp_path / "lr"
    result = find_lr(Config(data_dir=str(data_dir), out=str(out), find_lr_steps=100, device="cpu",
                            batch_size=8, limit_train=24, limit_test=8, ema=0))
    text = capsys.readouterr().out
    assert (out / "lr_find.png").stat().st_size > 10_000
    assert text.startswith("LR range test: no usable LR: the smoothed loss never fell by 5%")
    assert "leave lr= out" in text and "--lr" not in text, "from Python the advice names Config's fields"
    assert result.advice in text and result.suggestion != result.suggestion  # nan
    assert not (out / "last.pt").exists(), "the range test does not train a run"


def test_lr_auto_refuses_an_unusable_curve_and_trains_at_a_usable_ones_suggestion(data_dir, tmp_path, capsys,
                                                                                 monkeypatch):
    args = ["--data-dir", data_dir, *TINY, "--epochs", "1", "--lr", "auto", "--find-lr-steps", "100"]
    monkeypatch.setattr(lr_finder, "range_test", lambda *a, **k: flat_test(100))
    err = fails(train.main, [*args, "--out", tmp_path / "a"], capsys)
    assert err.startswith("error: --lr auto: the LR range test gives no usable LR: the smoothed loss never fell by "
                          "5% (at best")
    assert "drop --lr auto to train at the default LR, 0.0125 here" in err
    assert err.endswith(f"(plot: {tmp_path / 'a'}/lr_find.png)\n")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["lr_find.png"], "the plot, and no run"
    lrs = list(np.logspace(-6, 1, 100))
    known = lr_finder.RangeTest(lrs, sigmoid_curve(lrs), 0.0123)
    monkeypatch.setattr(lr_finder, "range_test", lambda *a, **k: known)
    train.main([*map(str, args), "--out", str(tmp_path / "b")])
    assert "LR range test: suggested max LR 0.0123" in capsys.readouterr().out
    assert checkpoint.load(tmp_path / "b" / "last.pt")["config"]["lr"] == 0.0123
    assert (tmp_path / "b" / "lr_find.png").exists()


# --------------------------------------------------------------------------------------- divergence
@pytest.fixture(scope="module")
def one_epoch(data_dir, tmp_path_factory):
    """A 1-epoch run that --resume can train on (no OneCycle to stretch): the checkpoint to poison."""
    out = tmp_path_factory.mktemp("one-epoch") / "run"
    train.main(["--data-dir", str(data_dir), "--out", str(out), *TINY, "--epochs", "1", "--scheduler", "none"])
    return out / "last.pt"


POISON = {  # a non-finite value the run must catch, whatever the CPU's rounding
    "weight": ("stem.0.weight", lambda w: w[0, 0, 0, 0].fill_(float("nan"))),  # the first loss is nan
    "running_var": ("layer4.1.bn2.running_var", lambda v: v.fill_(-1e30)),  # batch stats train; eval sqrt(< 0)
    "running_mean": ("layer4.1.bn2.running_mean", lambda m: m.fill_(float("inf"))),  # a buffer, never a loss
}


@pytest.mark.parametrize("how, says", [
    ("weight", "the training loss became non-finite at epoch 2, step 1: lower --lr"),
    ("running_var", "the test loss is non-finite after epoch 2 though every weight is finite"),
    ("running_mean", "layer4.1.bn2.running_mean became non-finite in epoch 2"),
])
def test_a_non_finite_value_stops_the_run_and_keeps_the_last_checkpoint(one_epoch, tmp_path, capsys, how, says):
    """Planted in a checkpoint (the format is public), then trained on with --resume."""
    state = checkpoint.load(one_epoch)
    key, plant = POISON[how]
    plant(state["model"][key])
    (tmp_path / "run").mkdir()
    poisoned = tmp_path / "run" / "last.pt"
    checkpoint.save(poisoned, state)
    before, writers = digest(poisoned), tensorboard_writers()
    err = fails(train.main, ["--resume", poisoned, "--epochs", "2"], capsys)
    assert says in err and err.rstrip().endswith(f"{poisoned} still holds epoch 1"), err
    assert digest(poisoned) == before and not (tmp_path / "run" / "best.pt").exists()
    assert tensorboard_writers() == writers, "the stopped run closed its TensorBoard writer"


def test_a_run_that_diverges_in_its_first_epoch_writes_no_checkpoint(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    err = fails(train.main, ["--data-dir", data_dir, "--out", out, *TINY, "--epochs", "1", "--lr", "1e12",
                             "--scheduler", "none"], capsys)
    assert "the training loss became non-finite at epoch 1, step " in err and "no checkpoint written" in err, err
    assert not (out / "last.pt").exists()


def tensorboard_writers() -> int:
    """TensorBoard event writers still open in this process (each holds a thread until closed)."""
    return sum(type(t).__name__ == "_AsyncWriterThread" for t in threading.enumerate())


def test_nonfinite_names_parameters_and_float_buffers():
    model = nets.create("resnet18")
    assert nonfinite(model) == []
    with torch.no_grad():
        model.fc.bias[3] = float("inf")
        model.layer1[0].bn1.running_var[0] = float("nan")
    assert nonfinite(model) == ["fc.bias", "layer1.0.bn1.running_var"]


# ---------------------------------------------------------------------------------- user mistakes
@pytest.mark.parametrize("args, words", [
    (["--epochs", "0"], "--epochs must be > 0"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--val-split", "1.5"], "--val-split must be in [0, 1)"),
    (["--model", "resnet50"], "invalid choice"),
    (["--optimizer", "lamb"], "invalid choice"),
    (["--lr", "fast"], "expected a number or 'auto'"),
    (["--ema", "1"], "--ema is a decay in [0, 1)"),
    (["--scheduler", "plateau"], "--scheduler plateau steps on a validation loss"),
    (["--batch-ramp"], "--batch-ramp replaces the LR cuts of --scheduler plateau"),
    (["--resume", "missing.pt"], "does not exist"),
    (["--resume", "NOTCKPT"], "not a readable checkpoint"),
    (["--resume", "LAST", "--model", "resnet34"], "differs from the checkpoint's resnet18"),
    ([], "already holds a resnet18 run (3 of 3 epochs), finished, and its OneCycle schedule cannot be "
         "stretched: pick another --out for a new run"),
    (["--model", "resnet34"], "already holds a resnet18 run (3 of 3 epochs): pick another "
                                                  "--out for resnet34"),
    (["--resume", "LAST", "--epochs", "5"], "--epochs 5: this run's OneCycle schedule was laid out for 3"),
])
def test_bad_input_exits_2_with_one_line_and_checkpoint_untouched(trained_copy, tmp_path, capsys,
                                                                 args, words):
    before = digest(trained_copy / "last.pt")
    (tmp_path / "notckpt.pt").write_text("hello")
    args = [trained_copy / "last.pt" if a == "LAST" else tmp_path / "notckpt.pt" if a == "NOTCKPT"
            else a for a in args]
    err = fails(train.main, ["--data-dir", tmp_path / "nodata", "--out", trained_copy, "--device", "cpu", *args],
                capsys)
    assert words in err
    assert digest(trained_copy / "last.pt") == before


@pytest.mark.parametrize("epoch, scheduler, says", [
    (2, "onecycle", "(2 of 3 epochs): continue it with --resume LAST, or pick another --out"),
    (3, "none", "(3 of 3 epochs), finished: train it longer with --resume LAST --epochs N (N > 3), or pick another "
                "--out"),
])
def test_a_run_directory_refusal_says_what_continuing_can_do(trained_copy, capsys, epoch, scheduler, says):
    state = checkpoint.load(trained_copy / "last.pt")
    state["epoch"], state["config"]["scheduler"] = epoch, scheduler
    checkpoint.save(trained_copy / "last.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    err = fails(train.main, ["--out", trained_copy, "--device", "cpu"], capsys)
    says = says.replace("LAST", str(trained_copy / "last.pt"))
    assert err == f"error: {trained_copy} already holds a resnet18 run {says}\n"


def test_fit_refuses_a_config_that_asks_for_the_range_test_alone(tmp_path):
    """The CLI's --find-lr runs find_lr; from Python, fit never quietly trains a config that asked for it."""
    with pytest.raises(UsageError, match=r"^find_lr=True asks for the LR range test alone: call find_lr\(config\)"):
        fit(Config(find_lr=True, out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("script", ["train", "bench", "sweep", "viz"])
def test_a_bad_flag_is_refused_before_torch_dali_or_optuna_load(script):
    """Options first: a typo costs a blink, not the seconds those imports take (more on a busy machine)."""
    argv = ["--checkpoint", "x", "--frobnicate"] if script == "viz" else ["--frobnicate"]
    probe = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from common import cli; import {script}\n"
             f"try:\n    cli.run(lambda: {script}.main({argv!r}))\nexcept SystemExit as e:\n"
             "    heavy = [m for m in ('torch', 'nvidia.dali', 'optuna', 'pytorch_grad_cam') if m in sys.modules]\n"
             "    print(e.code, heavy)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.stdout == "2 []\n" and proc.stderr.startswith("error: unrecognized arguments: --frobnicate"), \
        proc.stdout + proc.stderr


def test_bad_flag_from_the_shell_has_no_traceback(tmp_path):
    proc = run_script("train.py", "--out", tmp_path / "run", "--epochs", "-3", check=False)
    assert proc.returncode == 2 and proc.stderr == "error: --epochs must be > 0 (got -3)\n"
    assert not (tmp_path / "run").exists()


def test_missing_dataset_without_network_is_a_clear_error(tmp_path, capsys, monkeypatch):
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # nothing listens there: no download
    out = tmp_path / "run"
    err = fails(train.main, ["--data-dir", tmp_path / "empty", "--out", out, *TINY], capsys)
    assert "CIFAR-10 not found" in err and "cifar-10-python.tar.gz" in err
    assert not out.exists(), "nothing is written before the data is there"


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible)")
def test_deterministic_gpu_runs_repeat_bit_for_bit(data_dir, tmp_path):
    """--deterministic: two GPU runs from one seed (DALI on the GPU, bf16, cuDNN) end with the same
    weights, which is what a bit-exact GPU resume rests on."""
    runs = [fit(Config(data_dir=str(data_dir), out=str(tmp_path / name), epochs=2, device="cuda",
                       deterministic=True, batch_size=32, limit_train=128, limit_test=64))
            for name in ("a", "b")]
    a, b = (checkpoint.load(r.checkpoint) for r in runs)
    assert same_weights(a["model"], b["model"]) and same_history(a["history"], b["history"])
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic

"""viz.py and the explain API behind it: every picture and the report from a checkpoint, CAMs,
faithfulness, attacks, accuracy lines that name their weights, user mistakes."""
import contextlib
import hashlib
import io
import json
import pickle
import re
import shutil

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

import pipeline
import train
import explain
import viz
from common.cli import UsageError, UserError
from explain import Explanation, attacks, cams, evaluation, faithfulness, figures, intervals, layers
from explain.pixels import normalise, to_pixels
from nets import checkpoint
from tests.conftest import fails
from tests.test_folder import small_folder
from training import logits_of

N, LIMIT_TEST = 4, 120  # LIMIT_TEST: the shared run's --limit-test
FAITHFUL, SANITY = 4, 2  # the viz run's comparison: few images, it is the plumbing under test here
ACCURACY_LINE = re.compile(r"test accuracy (\d+\.\d\d)% on (\d+) images \((raw|EMA) weights, (no|flip) TTA\)")
PICTURES = ("curves", "misclassified", "gradcam", "layers", "methods", "confusion", "adversarial")


def normalised(images, mean, std):
    """uint8 HWC images normalised in torch, independently of the DALI pipeline viz.py uses."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture(scope="session")
def subject(trained_run, data_dir):
    """(model, data, state) as viz.py rebuilds them."""
    state = checkpoint.load(trained_run / "last.pt")
    model = evaluation.load_model(state, trained_run / "last.pt", torch.device("cpu"))
    return model, pipeline.load_cifar10(data_dir, download=False), state


def contents(run) -> dict:
    """Every file under the run directory but viz/, with a hash of its bytes."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.relative_to(run).parts[0] != "viz"}


def evaluated(data, n):
    """The test-set positions viz.py evaluates with --limit-test n (as train.py's --limit-test)."""
    return pipeline.subset(data.test_labels, n, seed=0)


@pytest.fixture(scope="module")
def explanation(trained_run):
    return Explanation.load(trained_run / "last.pt", device="cpu", limit_test=LIMIT_TEST)


@pytest.fixture(scope="module")
def viz_run(trained_run):
    """One in-process run with the defaults for --out and --data-dir (ScoreCAM left out: slow on a CPU);
    (stdout, output folder, the run directory's files before)."""
    before = contents(trained_run)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        viz.main(["--checkpoint", str(trained_run / "last.pt"), "--n", str(N), "--limit-test", str(LIMIT_TEST),
                  "--method", "gradcam", "gradcam++", "eigencam", "--adversarial", "--device", "cpu",
                  "--faithfulness-images", str(FAITHFUL), "--sanity-images", str(SANITY)])
    return out.getvalue(), trained_run / "viz", before


# -------------------------------------------------------------------------------------- one run
def test_every_picture_is_a_png_of_sensible_size_and_in_the_report(viz_run, trained_run):
    stdout, out, before = viz_run
    sizes = {}
    for name in PICTURES:
        with Image.open(out / f"{name}.png") as im:
            assert im.format == "PNG"
            im.load()  # the whole file decodes, not only its header
            sizes[name] = im.size
    assert all(w >= 400 and h >= 250 for w, h in sizes.values()), sizes
    assert sizes["layers"][0] > 3 * sizes["layers"][1], "one row: the image and its three stages"
    assert sizes["misclassified"][0] > 2.5 * sizes["misclassified"][1], f"{N} images fit one row"
    report = (out / "report.md").read_text()
    for name in PICTURES:
        assert f"]({name}.png)" in report
    assert "| gradcam " in report and "| eigencam " in report and "| airplane " in report
    # It wrote only into its own folder and left the checkpoint as it was.
    assert contents(trained_run) == before and "last.pt" in before
    assert "wrote" in stdout and stdout.rstrip().endswith(" s")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weights"] == "model" and summary["tta"] is False  # as trained: no EMA, no TTA
    assert "explaining the weights." in report


def test_gallery_holds_the_first_n_misclassified_images(viz_run, subject):
    _, out, _ = viz_run
    model, data, state = subject
    summary = json.loads((out / "summary.json").read_text())
    index = evaluated(data, LIMIT_TEST)
    assert not np.array_equal(index, np.arange(LIMIT_TEST)), "a subset, not the first images"
    with torch.no_grad():  # as the run evaluated (with the mirror images if it used TTA)
        x = normalised(data.test_images[index], state["mean"], state["std"])
        probs = logits_of(model, x, state["config"]["tta"]).softmax(1)
    labels = data.test_labels[index]
    wrong = np.flatnonzero(probs.argmax(1).numpy() != labels)
    assert N <= len(wrong) < LIMIT_TEST - N, "the fixture model makes some mistakes, not only mistakes"
    shown = summary["misclassified"]
    assert [m["index"] for m in shown] == index[wrong[:N]].tolist()  # test-set indices, not positions
    for m, k in zip(shown, wrong):
        assert m["true"] == data.classes[labels[k]] != m["predicted"] == data.classes[int(probs[k].argmax())]
        assert m["confidence"] == pytest.approx(float(probs[k].max()), abs=1e-4)
    assert summary["test_images"] == LIMIT_TEST
    assert summary["accuracy"] == pytest.approx(1 - len(wrong) / LIMIT_TEST)
    assert sum(r["images"] for r in summary["per_class"]) == LIMIT_TEST


def test_faithfulness_and_attack_numbers_are_finite(viz_run):
    summary = json.loads((viz_run[1] / "summary.json").read_text())
    faith = summary["faithfulness"]
    assert set(faith["methods"]) == {"gradcam", "gradcam++", "eigencam", "random map"}
    assert (faith["images"], faith["sanity_images"]) == (FAITHFUL, SANITY)
    assert faith["depths"] == ["fc", "layer4", "layer3", "layer2", "layer1", "stem"]  # from the output back
    for name, row in faith["methods"].items():
        for k in ("morf", "lerf", "score"):
            assert row[k]["n"] == FAITHFUL and row[k]["low"] <= row[k]["mean"] <= row[k]["high"], (name, k)
        assert row["score"]["mean"] == pytest.approx(row["lerf"]["mean"] - row["morf"]["mean"])
        assert (row["vs_random"] is None) == (name == "random map")
        assert len(row["sanity"]) == (0 if name == "random map" else 6)
        assert all(s["n"] == SANITY and -1 <= s["low"] <= s["mean"] <= s["high"] <= 1 for s in row["sanity"].values())
    report = (viz_run[1] / "report.md").read_text()
    assert "What each number measures" in report and "Neither measures localisation" in report
    assert "**paired differences of LeRF−MoRF (same images)**" in report
    attacked = summary["adversarial"]
    assert len(attacked) == N and all(r["true_after"] <= r["before"] + 1e-6 for r in attacked)


def test_accuracy_line_names_weights_and_tta_and_the_report_agrees(viz_run, trained_run):
    stdout, out, _ = viz_run
    summary = json.loads((out / "summary.json").read_text())
    first = stdout.splitlines()[0]  # printed as soon as the test pass ends, before the pictures
    assert first == f"test accuracy {summary['accuracy']:.2%} on {LIMIT_TEST} images (raw weights, no TTA)"
    assert summary["accuracy_line"] == first and f"**{first}**" in (out / "report.md").read_text()
    state = checkpoint.load(trained_run / "last.pt")
    trained = f"raw weights {state['history'][-1]['test_acc']:.2%}, no TTA on {LIMIT_TEST} test images"
    assert f"in training: final epoch: {trained}." in (out / "report.md").read_text()


def test_limit_test_keeps_every_class_in_its_share(viz_run, subject):
    summary = json.loads((viz_run[1] / "summary.json").read_text())
    data = subject[1]
    labels = data.test_labels
    counts = [r["images"] for r in summary["per_class"]]
    assert counts == np.bincount(labels[evaluated(data, LIMIT_TEST)], minlength=10).tolist()
    share = LIMIT_TEST * np.bincount(labels, minlength=10) / len(labels)
    assert min(counts) > 0 and np.abs(np.array(counts) - share).max() < 1, (counts, share)


def test_terminal_tables_name_the_attack_and_output_has_no_carriage_returns(viz_run):
    stdout = viz_run[0]
    summary = json.loads((viz_run[1] / "summary.json").read_text())
    fooled = sum(r["fooled"] for r in summary["adversarial"])
    assert f"\nadversarial: FGSM, ε = 8/255: {fooled} of {N} fooled:\n| true " in stdout
    assert (f"\nfaithfulness at layer3 (ROAD on {FAITHFUL} test images, every class in its share, for the "
            "predicted class; mean ± 95 % interval; LeRF−MoRF > 0: faithful):\n| method " in stdout)
    assert "\r" not in stdout and "test pass" not in stdout  # no progress bar into a pipe or a log


def loss_labels(fig) -> list:
    """The loss axis's tick labels in view, major and minor, as drawn."""
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    return [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)
            if t.get_text() and lo <= t.get_position()[1] <= hi]


def test_curves_put_final_accuracy_in_the_legend_and_losses_to_fixed_decimals(explanation):
    fig = explanation.curves()
    _, acc, _ = fig.axes
    final = explanation.state["history"][-1]["test_acc"]
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["train", f"test (final {final:.2%})"]
    assert not acc.texts, "no label on the plot that a point could hide"
    narrow = [{"epoch": 1, "train_loss": 2.21, "train_acc": 0.2, "test_loss": 2.34, "test_acc": 0.1}]
    wide = [{"epoch": e, "train_loss": a, "train_acc": 0.5, "test_loss": b, "test_acc": 0.4}
            for e, (a, b) in enumerate([(2.3, 2.2), (0.5, 0.9), (0.05, 0.4), (0.012, 0.3)], 1)]
    for labels in (loss_labels(fig), loss_labels(figures.plot_curves(narrow, [0.1])),
                   loss_labels(figures.plot_curves(wide, [0.1]))):
        assert 1 < len(labels) <= 10 and len(set(labels)) == len(labels), labels  # apart, not crowded
        assert len({len(t.split(".")[1]) for t in labels}) == 1, labels  # one number of decimals
    assert "0.010" in labels and "2.000" in labels  # the smallest to two significant digits


# ---------------------------------------------------------------------------------- Python API
def test_api_returns_figures_that_viz_saves_unchanged(explanation, viz_run):
    out = viz_run[1]
    pictures = {"curves": explanation.curves(), "misclassified": explanation.misclassified(N),
               "gradcam": explanation.gradcam(N), "confusion": explanation.confusion()}
    for name, fig in pictures.items():
        assert isinstance(fig, Figure) and fig.axes, name
        assert any(ax.images or ax.lines for ax in fig.axes), name
        png = io.BytesIO()
        fig.savefig(png, format="png")
        assert png.getvalue() == (out / f"{name}.png").read_bytes(), f"{name}: the API and viz.py differ"
    assert sum(bool(ax.images) for ax in pictures["gradcam"].axes) == 3 * N  # image, predicted, true
    assert explanation.accuracy_line() in repr(explanation)


def test_api_faithfulness_is_the_table_viz_reports(explanation, viz_run):
    """One code path: the API's numbers for gradcam and the random map are viz.py's (same images, seed)."""
    table = explanation.faithfulness(["gradcam"], images=FAITHFUL, sanity_images=0)
    reported = json.loads((viz_run[1] / "summary.json").read_text())["faithfulness"]["methods"]
    for name in ("gradcam", "random map"):
        ours = table.as_dict()["methods"][name]
        assert all(ours[k] == reported[name][k] for k in ("morf", "lerf", "score")), name
    assert table.markdown().startswith(f"faithfulness at layer3 (ROAD on {FAITHFUL} test images")
    assert table._repr_markdown_() == table.markdown()  # a notebook shows the tables
    with pytest.raises(UsageError, match="--faithfulness-images must be at least 2"):
        explanation.faithfulness(["gradcam"], images=1)
    head = explanation.methods(["gradcam"], n=2, table=table).axes[1].get_title()
    assert head in (f"gradcam\nLeRF−MoRF {table.row('gradcam').score.text()}{empty}" for empty in ("", " — empty"))


def test_api_explains_the_moving_average_with_flips(subject, tmp_path):
    """A run that kept an EMA and evaluated with flips: both used, and both named in the accuracy line."""
    _, data, state = subject
    ema = {k: v * 0.9 if k.startswith("fc.") else v for k, v in state["model"].items()}
    path = tmp_path / "ema.pt"
    torch.save({**state, "ema": ema, "config": {**state["config"], "tta": True}}, path)
    ex = Explanation.load(path, device="cpu", limit_test=20)
    averaged = evaluation.load_model({**state, "ema": ema}, path, torch.device("cpu"))
    index = evaluated(data, 20)
    with torch.no_grad():
        probs = logits_of(averaged, normalised(data.test_images[index], state["mean"], state["std"]),
                          tta=True).softmax(1).numpy()
    assert np.allclose(ex.test.probs, probs, atol=1e-5) and (ex.test.index == index).all()
    assert ACCURACY_LINE.fullmatch(ex.accuracy_line()).groups()[1:] == ("20", "EMA", "flip")


def test_api_raises_the_clis_one_line_errors(explanation, trained_run, tmp_path, capsys):
    with pytest.raises(UsageError) as e:
        explanation.gradcam(N, layer="layer4")
    cli = fails(viz.main, ["--checkpoint", trained_run / "last.pt", "--layer", "layer4"], capsys)
    assert cli == f"error: {e.value}\n" and "\n" not in str(e.value)
    with pytest.raises(UsageError, match="'layer9' is not a layer"):
        Explanation.load(trained_run / "last.pt", device="cpu", layer="layer9")
    with pytest.raises(UserError, match="does not exist"):
        Explanation.load(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="CIFAR-10 not found"):
        Explanation.load(trained_run / "last.pt", device="cpu", data_dir=tmp_path)
    with pytest.raises(UsageError, match="--method magic"):
        explanation.methods(["gradcam", "magic"])


def test_progress_bar_shows_on_a_terminal_only(explanation):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        loader = evaluation.test_loader(explanation.data, explanation.state, explanation.test.index[:8],
                                        torch.device("cpu"))
        with contextlib.redirect_stdout(stream):
            evaluation.predict(explanation.study.model, loader, explanation.test.index[:8], tta=False)
        assert ("test pass" in stream.getvalue()) == shown


# ------------------------------------------------------------------------------------ functions
@pytest.mark.parametrize("method", list(explain.options.CAM_CLASSES))
def test_each_cam_method_gives_unit_maps_of_image_size(subject, method):
    model, data, state = subject
    images = normalised(data.test_images[:2], state["mean"], state["std"])
    # The gradient-free methods run one forward pass per channel: layer1 (64) keeps them quick.
    layer = layers.find_layer(model, "layer1" if method in cams.GRADIENT_FREE else "layer3", 32)
    classes = data.test_labels[:2]
    maps = cams.cams(model, layer, images, classes, method)
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert maps.max() == pytest.approx(1, abs=1e-4) or maps.max() == 0  # scaled per map
    scores = faithfulness.road(model, images, maps, classes)
    assert all(np.isfinite(v).all() and v.shape == (2,) for v in scores.values())


def test_layer_names_resolve_to_blocks_and_map_sizes_are_measured(subject):
    model = subject[0]
    assert layers.find_layer(model, "layer3", 32) is model.layer3[1]
    assert layers.find_layer(model, "layer2.0", 32) is model.layer2[0]
    assert layers.map_size(model, model.layer3[1], 32) == (8, 8)
    assert layers.map_size(model, model.layer2[1], 64) == (32, 32)
    assert layers.fine_enough(model, "layer4", 64)  # 8x8 on larger images: only the size decides


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_attack_stays_within_eps_in_pixel_space_and_lowers_true_confidence(subject, method):
    model, data, state = subject
    pixels = to_pixels(normalised(data.test_images[:4], state["mean"], state["std"]),
                               state["mean"], state["std"])
    labels = torch.from_numpy(data.test_labels[:4])
    eps = 8 / 255
    torch.manual_seed(0)
    adv = attacks.attack(model, pixels, labels, eps, state["mean"], state["std"], method)
    assert (adv - pixels).abs().max() <= eps + 1e-6
    assert (adv - pixels).abs().max() > eps / 2, "the attack moved the pixels"
    assert adv.min() >= 0 and adv.max() <= 1

    def true_log_prob(x):
        with torch.no_grad():
            logits = model(normalise(x, state["mean"], state["std"]))
        return logits.log_softmax(1)[torch.arange(4), labels]
    assert (true_log_prob(adv) < true_log_prob(pixels)).all()


# ------------------------------------------------------------------------------- user mistakes
def test_layer4_is_refused_in_one_line(trained_run, tmp_path, capsys):
    err = fails(viz.main, ["--checkpoint", trained_run / "last.pt", "--layer", "layer4", "--out", tmp_path / "x"],
                capsys)
    assert err.startswith("error: --layer layer4 gives a 4x4 map") and not (tmp_path / "x").exists()


def test_unknown_layer_lists_the_valid_ones(trained_run, tmp_path, capsys):
    err = fails(viz.main, ["--checkpoint", trained_run / "last.pt", "--layer", "layer9", "--out", tmp_path / "x"],
                capsys)
    # Only the layers that would be accepted: layer4 and its blocks are too coarse (4x4) on 32 px.
    assert err.endswith("'layer9' is not a layer of this model; choose one of layer1, layer1.0, layer1.1, "
                        "layer2, layer2.0, layer2.1, layer3, layer3.0, layer3.1\n"), err


def test_the_test_pass_defaults_to_all_images_on_a_gpu_and_a_stated_share_on_the_cpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert evaluation.test_limit(None, cpu) == evaluation.CPU_TEST_IMAGES == 2000
    assert evaluation.test_limit(None, gpu) == 0 and evaluation.test_limit(0, cpu) == 0
    assert evaluation.test_limit(300, gpu) == 300
    with pytest.raises(UsageError, match="--limit-test must be >= 0"):
        evaluation.test_limit(-1, cpu)
    text = explain.Options.__dataclass_fields__["limit_test"].metadata["help"]
    assert "default: all on a GPU, 2000 on the CPU" in text


def test_curves_of_one_epoch_have_whole_epoch_ticks():
    for epochs in (1, 2, 40):
        history = [{"epoch": e, "train_loss": 2.2, "train_acc": 0.2, "test_loss": 2.3, "test_acc": 0.1}
                   for e in range(1, epochs + 1)]
        fig = figures.plot_curves(history, [0.1])
        FigureCanvasAgg(fig).draw()
        for ax in fig.axes[:2]:
            lo, hi = ax.get_xlim()
            ticks = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
            assert ticks and all(t.isdigit() for t in ticks), ticks
            assert ("1" in ticks) == (epochs < 40), ticks


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_code_in_a_pickle_is_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling this creates the marker file

    plain, zipped = tmp_path / "plain.pt", tmp_path / "zipped.pt"
    plain.write_bytes(pickle.dumps({"model": Evil()}))
    torch.save({"format": checkpoint.FORMAT, "model": Evil()}, zipped)
    for path in (plain, zipped):
        err = fails(viz.main, ["--checkpoint", path], capsys)
        assert "holds objects other than tensors and plain values, so it was not loaded" in err
    assert not marker.exists()


def test_missing_or_truncated_checkpoint_and_bad_flags(trained_run, tmp_path, capsys):
    assert "does not exist" in fails(viz.main, ["--checkpoint", tmp_path / "nope.pt"], capsys)
    ckpt = trained_run / "last.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:100_000])
    assert "not a readable checkpoint" in fails(viz.main, ["--checkpoint", truncated], capsys)
    assert "--eps" in fails(viz.main, ["--checkpoint", ckpt, "--adversarial", "--eps", "0"], capsys)
    assert "--method" in fails(viz.main, ["--checkpoint", ckpt, "--method", "gradcam", "magic"], capsys)
    assert "--adversarial" in fails(viz.main, ["--checkpoint", ckpt, "--attack", "pgd"], capsys)
    assert "--faithfulness-images must be at least 2, for an interval (got 1)" in fails(
        viz.main, ["--checkpoint", ckpt, "--faithfulness-images", "1"], capsys)
    assert "--sanity-images must be between 0 (no sanity check) and --faithfulness-images (4) (got 5)" in fails(
        viz.main, ["--checkpoint", ckpt, "--faithfulness-images", "4", "--sanity-images", "5"], capsys)
    assert "CIFAR-10 not found" in fails(viz.main, ["--checkpoint", ckpt, "--data-dir", tmp_path], capsys)


def test_viz_explains_the_moving_average_when_the_run_kept_one(trained_run):
    state = checkpoint.load(trained_run / "last.pt")
    assert evaluation.weights_of(state) == "model"  # the shared run kept no EMA
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    model = evaluation.load_model({**state, "ema": ema}, trained_run / "last.pt", torch.device("cpu"))
    assert torch.equal(model.fc.weight, ema["fc.weight"]) and not model.training


def test_viz_explains_a_run_that_left_broken_images_out_without_opening_the_training_split(tmp_path,
                                                                                           monkeypatch):
    """The checkpoint says what the run read (classes, size, --skip-bad-images): viz reads the test
    split alone, leaves out the same broken files, and never opens train/ (here it is gone)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = small_folder(tmp_path / "data", n_train=8, n_test=3)
    (root / "train" / "a" / "1.jpg").write_bytes(b"not an image\n")
    (root / "test" / "b" / "0.jpg").write_bytes(b"")
    run = tmp_path / "run"
    train.main(["--data", "imagefolder", "--data-dir", str(root), "--out", str(run), "--device", "cpu",
                "--epochs", "1", "--batch-size", "8", "--precision", "fp32", "--scheduler", "none",
                "--skip-bad-images"])
    shutil.rmtree(root / "train")
    with contextlib.redirect_stdout(io.StringIO()):
        viz.main(["--checkpoint", str(run / "last.pt"), "--n", "2", "--method", "gradcam", "--device", "cpu",
                  "--faithfulness-images", "0"])
    summary = json.loads((run / "viz" / "summary.json").read_text())
    assert summary["faithfulness"] is None  # 0: left out
    trained = checkpoint.load(run / "last.pt")["history"][-1]
    assert summary["test_images"] == trained["test_count"] == 5  # the broken test file left out as in training
    assert summary["accuracy"] == pytest.approx(trained["ema_test_acc"])  # the same images, the same weights


def test_a_model_at_chance_is_called_so_in_the_output_the_report_and_its_pictures(trained_run, tmp_path):
    """Zero output weights: every image gets the same logits, so every prediction is class 0."""
    state = checkpoint.load(trained_run / "last.pt")
    path = tmp_path / "flat.pt"
    torch.save({**state, "model": {k: v * 0 if k.startswith("fc.") else v for k, v in state["model"].items()}},
               path)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        viz.main(["--checkpoint", str(path), "--n", "2", "--limit-test", str(LIMIT_TEST), "--method", "gradcam",
                  "--device", "cpu", "--out", str(tmp_path / "viz"), "--faithfulness-images", "4",
                  "--sanity-images", "0"])
    summary = json.loads((tmp_path / "viz" / "summary.json").read_text())
    data = pipeline.load_cifar10(state["config"]["data_dir"], download=False)
    assert summary["accuracy"] == pytest.approx(np.mean(data.test_labels[evaluated(data, LIMIT_TEST)] == 0))
    chance = summary["chance"]
    assert chance["at_chance"] and chance["guessing_low"] <= summary["accuracy"] <= chance["guessing_high"]
    note = chance["note"]
    assert note.startswith(f"at chance: {summary['accuracy']:.2%} on {LIMIT_TEST} images") and "mean nothing" in note
    assert stdout.getvalue().splitlines()[1] == f"note: {note}"
    assert f"**Note: {note}.**" in (tmp_path / "viz" / "report.md").read_text()
    # The same logits whatever the pixels: no change of confidence, written without a sign.
    assert summary["faithfulness"]["methods"]["gradcam"]["score"]["mean"] == 0
    assert re.search(r"\n\| gradcam +\| +0\.000 ± 0\.000 \|", stdout.getvalue())
    ex = Explanation.load(path, device="cpu", limit_test=LIMIT_TEST)
    for fig in (ex.gradcam(2), ex.depth(), ex.methods(["gradcam"], n=2)):
        assert "a model at chance" in fig._suptitle.get_text() and "these maps mean nothing" in fig._suptitle.get_text()
    assert "a model at chance" not in ex.misclassified(2)._suptitle.get_text()  # no map there


def test_a_score_that_rounds_to_zero_has_no_sign():
    assert [intervals.signed(x) for x in (0.1234, -0.1236, -0.0004, 0.0, 0.0004)] == [
        "+0.123", "−0.124", "0.000", "0.000", "0.000"]

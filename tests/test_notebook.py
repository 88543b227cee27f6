"""The course's notebook (notebooks/course.ipynb), run in a real Jupyter kernel the way papermill runs
one: its `parameters` cell keeps the course's values and a cell inserted after it sets a tiny CPU budget
on the synthetic CIFAR-10. Its cells are imports, plain values and calls only: no def, class or lambda."""
import ast
import re

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from notebooks.render import with_parameters
from tests.conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "course.ipynb"
COURSE = dict(data_dir="data", run_dir="runs/notebook", epochs=20, batch_size=512, lr=0.0, limit_train=0, limit_test=0,
              find_lr_steps=200, device="auto")  # ResNet18, 20 epochs on all of CIFAR-10, on the GPU if any
# 1 epoch of 8 steps, 20 test images (over 10 mistakes), the range test's fewest steps (100) at batch 2:
# the range test's length is one rule, refused below it, and its steps cost what their images cost.
BUDGET = dict(epochs=1, batch_size=2, limit_train=16, limit_test=20, find_lr_steps=100, device="cpu")
PICTURES = ("lr_test.figure()", "explanation.curves()", "explanation.misclassified(n=10)",
            'explanation.gradcam(n=10, layer="layer3")')
SECOND_FIT = "fit(config)"  # appended: the run directory now holds a run
CELL_TIMEOUT = 600  # seconds: only a hung cell gets near it, however busy the machine
FINAL_LINE = re.compile(r"^done: final test acc \d+\.\d\d% \(raw weights, flip TTA\), \d+\.\d\d% \(EMA weights, "
                        r"flip TTA\) after 1 epoch; (AT CHANCE .*; )?wall time [\d.]+ s$", re.M)  # 1 epoch: maybe


def read() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def python_of(source: str) -> str:
    """A cell's Python: IPython's %magic and !shell lines dropped."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


def definitions(source: str) -> list:
    """The def, class and lambda nodes in a cell, as (kind, line)."""
    kinds = {ast.FunctionDef: "def", ast.AsyncFunctionDef: "def", ast.ClassDef: "class", ast.Lambda: "lambda"}
    return [(kinds[type(node)], node.lineno) for node in ast.walk(ast.parse(python_of(source)))
            if type(node) in kinds]


def beyond_calls(source: str) -> list:
    """Statements other than imports, assignments and expressions (calls): control flow, with, del..."""
    plain = (ast.Import, ast.ImportFrom, ast.Assign, ast.Expr)
    return [type(s).__name__ for s in ast.parse(python_of(source)).body if not isinstance(s, plain)]


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def cell_running(nb, code: str):
    """The one code cell whose source holds `code`."""
    found = [c for c in code_cells(nb) if code in c.source]
    assert len(found) == 1, f"{len(found)} cells hold {code!r}"
    return found[0]


def text_of(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def has_png(cell) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.outputs)


@pytest.fixture(scope="module")
def executed(data_dir, tmp_path_factory):
    """(the executed notebook, its run directory): executed as Jupyter would, from notebooks/."""
    run_dir = tmp_path_factory.mktemp("notebook-run")  # empty
    nb = with_parameters(read(), {"data_dir": str(data_dir), "run_dir": str(run_dir), **BUDGET})
    nb.cells.append(new_code_cell(SECOND_FIT, metadata={"tags": ["raises-exception"]}))
    # The python3 kernel spec runs this interpreter (jupyter_client puts sys.executable for "python").
    NotebookClient(nb, timeout=CELL_TIMEOUT, startup_timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return nb, run_dir


def test_every_cell_runs_and_a_second_fit_refuses_with_the_one_line_message(executed):
    nb, run_dir = executed
    errors = [(i, o) for i, c in enumerate(code_cells(nb)) for o in c.outputs if o.output_type == "error"]
    assert [i for i, _ in errors] == [len(code_cells(nb)) - 1], [o.evalue for _, o in errors]
    error = errors[0][1]
    assert error.ename == "UsageError"
    assert error.evalue == (f"{run_dir} already holds a resnet18 run (1 of 1 epochs), finished, and its OneCycle "
                            "schedule cannot be stretched: pick another --out for a new run")
    assert (run_dir / "last.pt").is_file() and (run_dir / "lr_find.png").is_file()


def test_range_test_curves_gallery_and_gradcam_are_pictures(executed):
    nb, _ = executed
    for code in PICTURES:
        assert has_png(cell_running(nb, code)), code
    assert text_of(cell_running(nb, "find_lr(config)")).startswith("LR range test: ")  # its verdicts: test_train


def test_training_log_is_a_clean_table_and_the_final_accuracy_is_printed(executed):
    nb, _ = executed
    log = text_of(cell_running(nb, "result = fit(config)"))
    assert not [o for c in code_cells(nb) for o in c.outputs if "\r" in o.get("text", "")]  # no bar debris
    lines = log.splitlines()
    assert lines[0].startswith("resnet18 on cpu | 16 train / 20 test images | batch 2 |")
    assert lines[1].split() == ["epoch", "lr", "train", "loss", "train", "acc", "test", "loss", "test", "acc",
                                "EMA", "acc", "img/s", "epoch", "s"]
    assert lines[2].split()[0] == "1" and len(lines[2]) == len(lines[1])
    assert FINAL_LINE.search(lines[3])
    final = text_of(cell_running(nb, "print(result.summary)"))
    assert FINAL_LINE.search(final)
    assert re.search(r"^test accuracy \d+\.\d\d% on 20 images \(EMA weights, flip TTA\)$", final, re.M)


def test_the_committed_notebook_runs_the_course_budget_unchanged():
    """Run top to bottom as it is (Colab's Run all), it trains the course's budget: no cell of a smaller
    run's budget is left in it (Colab does not show tags), and its parameters are the course's."""
    nb = read()
    assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    tagged = [c for c in code_cells(nb) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    values = {}
    for statement in ast.parse(tagged[0].source).body:  # plain values only
        assert isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant), \
            ast.unparse(statement)
        values[statement.targets[0].id] = statement.value.value
    assert values == COURSE and set(BUDGET) | {"data_dir", "run_dir"} <= set(values)


def test_the_committed_notebook_shows_its_run_and_states_the_accuracy_it_printed():
    nb = read()
    assert all(has_png(cell_running(nb, code)) for code in PICTURES)
    final = text_of(cell_running(nb, "print(result.summary)"))
    raw, ema = re.search(r"final test acc (\d+\.\d\d)% \(raw weights.*?, (\d+\.\d\d)% \(EMA weights", final).groups()
    assert f"{raw} % (raw weights) and {ema} % (EMA weights)" in nb.cells[0].source


def test_every_step_follows_a_markdown_line_saying_what_it_shows():
    cells = read().cells
    steps = [i for i, c in enumerate(cells) if c.cell_type == "code"]
    assert [cells[i - 1].cell_type for i in steps] == ["markdown"] * len(steps)


def test_no_cell_defines_a_function_or_a_class_and_after_the_set_up_only_imports_values_and_calls():
    cells = code_cells(read())
    found = {i: definitions(c.source) for i, c in enumerate(cells)}
    assert not any(found.values()), {i: d for i, d in found.items() if d}
    assert len(cells) >= 8 and all(beyond_calls(c.source) == [] for c in cells[1:])
    assert "If" in beyond_calls(cells[0].source)  # the set-up cell: the one with a branch (Colab or not)


@pytest.mark.parametrize("planted, kind", [("key = lambda row: row[0]", "lambda"), ("def f():\n    pass", "def"),
                                           ("class C:\n    pass", "class"),
                                           ("%matplotlib inline\nsorted(x, key=lambda v: -v)", "lambda")])
def test_the_definition_check_catches_a_planted_one(planted, kind):
    nb = read()
    cell = code_cells(nb)[-1]
    assert definitions(cell.source) == []
    assert [k for k, _ in definitions(cell.source + "\n" + planted)] == [kind]

"""Every chapter in chapters/ runs, cell by cell, in a fresh Jupyter kernel.

The reader's code is the tested code: no cell is skipped or shortened.  A
failing cell fails the test with its source and traceback.  Set
``GLUON_FACE_CHAPTER_OUT=<dir>`` to keep the executed notebooks (with figures)
for a look, e.g. ``jupyter nbconvert --to html``.
"""
import glob
import os
import re
import sys

import nbformat
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import d2lmd  # noqa: E402

CHAPTER_FILES = sorted(glob.glob(os.path.join(d2lmd.CHAPTERS, "*.md")))
NAMES = [os.path.basename(p) for p in CHAPTER_FILES]
# Per-cell limit; a whole chapter is meant to take a few minutes on 2 cores.
CELL_TIMEOUT = int(os.environ.get("GLUON_FACE_CELL_TIMEOUT", "900"))


def test_there_are_chapters():
    assert "index.md" in NAMES
    assert len(NAMES) >= 2


# ---------------------------------------------------------------- converter


def test_converter_splits_cells():
    text = "\n".join([
        "# Title", ":label:`sec_x`", "",
        "```{.python .input}", "a = 1", "```", "",
        "Some prose with ```inline``` code.", "",
        "```python", "# not executed", "```{.python .input}", "```", "",
        "```{.python .input  n=7}", "%matplotlib inline", "b = a + 1", "```",
    ])
    nb = d2lmd.markdown_to_notebook(text)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds == ["markdown", "code", "markdown", "code"]
    assert nb.cells[1].source == "a = 1"
    assert "# not executed" in nb.cells[2].source
    assert nb.cells[3].source == "%matplotlib inline\nb = a + 1"
    nbformat.validate(nb)


def test_committed_outputs_are_found():
    text = "```{.python .input  n=1}\nx\n```\n\n```{.json .output n=1}\n[]\n```\n"
    assert d2lmd.committed_outputs(text) == 1
    # Code that merely mentions an attribute named output is not an output block.
    assert d2lmd.committed_outputs("```{.python .input}\nself.output = None\n```\n") == 0


def test_converter_rejects_unclosed_cell():
    with pytest.raises(ValueError, match="line 2"):
        d2lmd.markdown_to_notebook("x\n```{.python .input}\nprint(1)\n")


def test_kernel_runs_this_python_with_repo_on_path(tmp_path):
    nb = d2lmd.markdown_to_notebook("\n".join([
        "```{.python .input}", "import sys, os, gluon_face", "```",
        "```{.python .input}", "print(sys.executable); print(os.getcwd())", "```",
    ]))
    nb, _ = d2lmd.execute_notebook(nb, str(tmp_path), timeout=120)
    text = nb.cells[1].outputs[0]["text"].split("\n")
    assert os.path.realpath(text[0]) == os.path.realpath(sys.executable)
    assert os.path.realpath(text[1]) == os.path.realpath(str(tmp_path))


def test_failing_cell_is_reported(tmp_path):
    nb = d2lmd.markdown_to_notebook("```{.python .input}\nx = 1\n```\n"
                                    "```{.python .input}\nraise ValueError('boom %d' % x)\n```\n")
    with pytest.raises(d2lmd.CellError) as info:
        d2lmd.execute_notebook(nb, str(tmp_path), timeout=120, name="t.md")
    msg = str(info.value)
    assert "raise ValueError" in msg and "boom 1" in msg and "t.md" in msg


# ------------------------------------------------------------ chapter format


@pytest.mark.parametrize("path", CHAPTER_FILES, ids=NAMES)
def test_chapter_format(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    name = os.path.basename(path)
    # No committed outputs (d2lbook's ```{.json .output} blocks or notebook JSON).
    assert d2lmd.committed_outputs(text) == 0, name + " has committed outputs"
    assert '"outputs"' not in text, name
    assert re.search(r"^:label:`\w+`", text, re.M), name + " has no :label:"
    nb = d2lmd.markdown_to_notebook(text)
    assert not d2lmd.has_outputs(nb)
    if name == "index.md":
        assert "```toc" in text
        return
    assert re.search(r"^## Summary\s*$", text, re.M), name + " has no ## Summary"
    if name != "solutions.md":
        assert re.search(r"^## Exercises\s*$", text, re.M), name + " has no ## Exercises"
        # d2l's preamble: the book's import and numpy mode.
        assert "from d2l import mxnet as d2l" in text, name
        assert "npx.set_np()" in text, name
    assert any(c.cell_type == "code" for c in nb.cells), name


def test_index_lists_every_chapter():
    with open(os.path.join(d2lmd.CHAPTERS, "index.md"), encoding="utf-8") as f:
        text = f.read()
    toc = re.search(r"```toc\n(.*?)```", text, re.S).group(1)
    entries = [line.strip() for line in toc.splitlines()
               if line.strip() and not line.startswith(":")]
    for entry in entries:
        assert entry + ".md" in NAMES, "index.md lists a missing chapter: " + entry
    for name in NAMES:
        if name != "index.md":
            assert name[:-3] in entries, name + " is not in index.md's toc"


# Sections of the d2l book itself that the chapters may refer to.
D2L_LABELS = {"sec_resnet", "sec_softmax", "sec_softmax_scratch", "sec_batch_norm",
              "sec_multi_gpu", "sec_multi_gpu_concise", "sec_fashion_mnist",
              "sec_model_construction"}


def test_numref_targets_exist():
    labels, refs = set(D2L_LABELS), set()
    for path in CHAPTER_FILES:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        labels.update(re.findall(r":label:`(\w+)`", text))
        refs.update(re.findall(r":numref:`(\w+)`", text))
    assert refs <= labels, f"dangling :numref: {sorted(refs - labels)}"


def test_cite_keys_exist():
    """Every key of a :cite:`A` or :cite:`A,B` has one entry in chapters/refs.bib."""
    with open(os.path.join(d2lmd.CHAPTERS, "refs.bib"), encoding="utf-8") as f:
        entries = re.findall(r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", f.read(), re.M)
    duplicates = sorted({k for k in entries if entries.count(k) > 1})
    assert not duplicates, f"refs.bib defines these keys twice: {duplicates}"
    missing = {}
    for path in CHAPTER_FILES:
        with open(path, encoding="utf-8") as f:
            for group in re.findall(r":cite:`([^`]+)`", f.read()):
                for key in (k.strip() for k in group.split(",")):
                    if key not in entries:
                        missing.setdefault(os.path.basename(path), []).append(key)
    assert not missing, f"cited but not in refs.bib: {missing}"


# --------------------------------------------------------------- execution


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTER_FILES, ids=NAMES)
def test_chapter_runs(path, tmp_path):
    name = os.path.basename(path)
    nb = d2lmd.read_chapter(path)
    nb, times = d2lmd.execute_notebook(nb, str(tmp_path), timeout=CELL_TIMEOUT, name=name)
    total = sum(t for _, t in times)
    slowest = sorted(times, key=lambda it: -it[1])[:3]
    slow = ", ".join(f"#{i} {t:.1f}s" for i, t in slowest)
    print(f"{name}: {total:.1f} s over {len(times)} cells; slowest {slow}")
    out = os.environ.get("GLUON_FACE_CHAPTER_OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        nbformat.write(nb, os.path.join(out, name[:-3] + ".ipynb"))
    # A chapter that draws must have produced PNG figures (%matplotlib inline).
    with open(path, encoding="utf-8") as f:
        draws = re.search(r"\b(plt\.|d2l\.plot|plot_\w+\()", f.read())
    if draws:
        assert d2lmd.png_outputs(nb) > 0, name + " draws but produced no PNG"
    assert d2lmd.svg_only_outputs(nb) == 0, name + " has figures rendered as SVG, not PNG"

"""d2l markdown -> nbformat notebook, and running one in a fresh kernel.

d2lbook keeps chapters as markdown in which code cells are fenced as
```` ```{.python .input} ```` (optionally with attributes such as ``n=3``); every
other line, including ordinary ```` ```python ```` fences, is markdown.  This
module does the same conversion so the tests execute exactly what a reader
runs, cell by cell, in an IPython kernel (as ``d2lbook build eval`` would).

The kernel is started from *this* interpreter (``sys.executable``), not from
whatever ``python`` is first on ``PATH``: a throw-away kernelspec is written
for it, with ``PYTHONPATH`` pointing at the repository so ``import gluon_face``
works without installing the package.
"""
import json
import os
import re
import sys
import tempfile
import time

import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHAPTERS = os.path.join(REPO, "chapters")

# ```{.python .input}  ```{.python .input  n=12}  ```{.python .input #@tab all}
_CODE_OPEN = re.compile(r"^```\{\.python\s+\.input\b[^}]*\}\s*$")
_FENCE = re.compile(r"^```")
# Colour codes in IPython tracebacks.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Keep the end of long tracebacks (where the error is).
_MAX_DETAIL = 6000
# d2lbook's committed outputs: ```{.json .output n=3} blocks.
_OUTPUT_FENCE = re.compile(r"^```\{\.\w+\s+\.output\b", re.M)


def committed_outputs(text):
    """Number of d2lbook output blocks (```` ```{.json .output} ````) in a chapter."""
    return len(_OUTPUT_FENCE.findall(text))


def markdown_to_notebook(text):
    """Split d2l markdown into markdown and code cells.

    Parameters
    ----------
    text : str
        The chapter source.

    Returns
    -------
    nbformat.NotebookNode
        A v4 notebook without outputs; blank-only markdown cells are dropped.
    """
    cells = []
    buf = []
    kind = "markdown"
    in_other_fence = False

    def flush():
        body = "\n".join(buf).strip("\n")
        if kind == "code":
            cells.append(nbformat.v4.new_code_cell(body))
        elif body.strip():
            cells.append(nbformat.v4.new_markdown_cell(body))
        buf.clear()

    for lineno, line in enumerate(text.splitlines(), 1):
        if kind == "markdown" and not in_other_fence and _CODE_OPEN.match(line):
            flush()
            kind = "code"
            start = lineno
            continue
        if kind == "code" and line.strip() == "```":
            flush()
            kind = "markdown"
            continue
        if kind == "markdown":
            # Other fenced blocks (```python, ```bash, ```toc) stay markdown; track
            # them so a '```{.python .input}' inside one is not taken for a cell.
            if in_other_fence and line.strip() == "```":
                in_other_fence = False
            elif not in_other_fence and _FENCE.match(line):
                in_other_fence = True
        buf.append(line)
    if kind == "code":
        raise ValueError(f"code cell opened on line {start} is never closed")
    flush()
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def read_chapter(path):
    with open(path, encoding="utf-8") as f:
        return markdown_to_notebook(f.read())


def _kernel_spec_manager(spec_dir, env):
    """A KernelSpecManager that only knows a 'python3' kernel run by sys.executable."""
    from jupyter_client.kernelspec import KernelSpecManager

    kdir = os.path.join(spec_dir, "python3")
    os.makedirs(kdir, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (gluon_face tests)",
        "language": "python",
        "env": env,
    }
    with open(os.path.join(kdir, "kernel.json"), "w") as f:
        json.dump(spec, f)
    # ensure_native_kernel=False: do not fall back to ipykernel's own spec.
    return KernelSpecManager(kernel_dirs=[spec_dir], ensure_native_kernel=False)


class CellError(AssertionError):
    pass


def execute_notebook(nb, cwd, timeout=600, name="chapter"):
    """Run every code cell of ``nb`` in a fresh kernel started in ``cwd``.

    Returns the executed notebook and a list of per-cell wall times in seconds.
    Raises CellError with the failing cell's source and traceback.
    """
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    pythonpath = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": pythonpath}
    with tempfile.TemporaryDirectory(prefix="gf-kernelspec-") as spec_dir:
        km = KernelManager(kernel_name="python3",
                           kernel_spec_manager=_kernel_spec_manager(spec_dir, env))
        client = NotebookClient(nb, km=km, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": cwd}},
                                allow_errors=False, record_timing=True)
        times = []
        try:
            with client.setup_kernel(cwd=cwd):
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code":
                        continue
                    t0 = time.perf_counter()
                    try:
                        client.execute_cell(cell, index)
                    except (CellExecutionError, CellTimeoutError) as err:
                        detail = _ANSI.sub("", str(err))
                        if len(detail) > _MAX_DETAIL:  # e.g. a printed array in the message
                            detail = "...\n" + detail[-_MAX_DETAIL:]
                        raise CellError(f"{name}: cell {index} failed\n--- source ---\n"
                                        f"{cell.source}\n--- error ---\n{detail}") from None
                    times.append((index, time.perf_counter() - t0))
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    return nb, times


def has_outputs(nb):
    return any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))
               for c in nb.cells)


def png_outputs(nb):
    return sum(1 for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []) if "image/png" in o.get("data", {}))


def svg_only_outputs(nb):
    """Figures that came out as SVG without a PNG (d2l.use_svg_display switches to SVG)."""
    return sum(1 for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", [])
               if "image/svg+xml" in o.get("data", {}) and "image/png" not in o["data"])

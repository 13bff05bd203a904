"""Without MXNet the package imports, the launcher works and every command says what to install.

Each case runs in a fresh Python process whose ``PYTHONPATH`` starts with a folder
holding an ``mxnet`` package that cannot be imported, as a missing MXNet (an
``ImportError``) or as MXNet 1.9.1 under numpy >= 1.24 (an ``AttributeError`` from
``np.bool``), and a ``dmlc_tracker`` (shipped with the mxnet wheel) that cannot be
imported either.  The commands are the console scripts declared in setup.py, called
as the installed scripts call them, the installed scripts themselves and the
``tools/*.py`` wrappers.
"""
import ast
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from gluon_face.commands import _entry

ROOT = Path(__file__).resolve().parents[1]
NOT_INSTALLED = "gluon_face needs MXNet 1.9.1, which is not installed"
NUMPY_TOO_NEW = "MXNet 1.9.1 cannot import with numpy"
# What the stand-in raises, and the message gluon_face turns it into.
SHADOWS = {
    "missing": ("raise ImportError('No module named mxnet')", NOT_INSTALLED),
    "numpy-too-new": ("raise AttributeError(\"module 'numpy' has no attribute 'bool'\")",
                      NUMPY_TOO_NEW),
}


def _console_scripts():
    """``{command: (module, function)}`` of setup.py's ``console_scripts`` list."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "console_scripts" for t in node.targets):
            specs = ast.literal_eval(node.value)
            break
    else:
        raise AssertionError("setup.py assigns no console_scripts list")
    scripts = {}
    for spec in specs:
        name, target = (part.strip() for part in spec.split("="))
        module, function = target.split(":")
        scripts[name] = (module, function)
    return scripts


CONSOLE_SCRIPTS = _console_scripts()
TOOLS = sorted(p.stem for p in (ROOT / "tools").glob("*.py") if p.stem != "benchmark_torch")


@pytest.fixture(scope="module", params=sorted(SHADOWS))
def shadow(request, tmp_path_factory):
    """``(env, message)``: an environment where MXNet cannot be imported, and what it says."""
    folder = tmp_path_factory.mktemp(f"shadow-{request.param}")
    raise_line, message = SHADOWS[request.param]
    for package in ("mxnet", "dmlc_tracker"):
        (folder / package).mkdir()
        line = raise_line if package == "mxnet" else "raise ImportError('no dmlc_tracker')"
        (folder / package / "__init__.py").write_text(line + "\n")
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path), message


def _run(args, env, cwd=None):
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def _one_line(proc, prefix, message):
    """The single stderr line of ``proc``: exit 2, ``'<prefix>: error: <message>...'``."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"{prefix}: error: {message}"), lines[0]
    assert proc.stdout == ""
    return lines[0]


def test_the_package_and_the_launcher_import_without_mxnet(shadow):
    env, _ = shadow
    code = textwrap.dedent("""
        import sys
        import gluon_face
        import gluon_face.commands.launch as launch
        import gluon_face._cli, gluon_face._io, gluon_face.commands._entry
        import gluon_face.benchmarks.timing, gluon_face.benchmarks.memory
        import gluon_face.benchmarks.text
        assert gluon_face.__version__
        assert launch.main(["--help"]) == 0
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("mxnet", "dmlc_tracker"))
        assert not loaded, loaded
    """)
    proc = _run([sys.executable, "-c", code], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage: launch.py")


def _modules():
    """Every module of the package, by name, found from the files (nothing imported)."""
    names = []
    for path in sorted((ROOT / "gluon_face").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def test_every_module_imports_or_says_what_to_install(shadow):
    """A module that needs MXNet fails with gluon_face's one-line message, never MXNet's own;
    the launcher, the metrics and the command-line helpers import."""
    env, message = shadow
    code = textwrap.dedent(f"""
        import importlib
        for name in {_modules()!r}:
            try:
                importlib.import_module(name)
            except ImportError as err:
                if not str(err).startswith({message!r}):
                    raise
                continue
            print(name)
    """)
    proc = _run([sys.executable, "-c", code], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = set(proc.stdout.split())
    assert {"gluon_face", "gluon_face.commands", "gluon_face.commands.launch",
            "gluon_face.commands._entry", "gluon_face.evaluation", "gluon_face._cli",
            "gluon_face._io"} <= imported
    assert "gluon_face.model_zoo" not in imported


def test_setup_py_and_the_tools_run_every_command_through_the_entry():
    expected = {f"gluon-face-{name}": ("gluon_face.commands._entry", name.replace("-", "_"))
                for name in _entry.COMMANDS}
    assert CONSOLE_SCRIPTS == expected
    assert TOOLS == sorted(module for module, _, _ in _entry.COMMANDS.values())
    for name in TOOLS:
        text = (ROOT / "tools" / f"{name}.py").read_text(encoding="utf-8")
        assert "from gluon_face.commands._entry import run\n" in text, name
        assert f'run("{name.replace("_", "-")}", prog=' in text, name


@pytest.mark.parametrize("name", sorted(CONSOLE_SCRIPTS))
def test_console_script_targets_print_one_line_without_mxnet(name, shadow):
    """Called as the installed script calls it: ``sys.exit(function())``."""
    env, message = shadow
    module, function = CONSOLE_SCRIPTS[name]
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    if name == "gluon-face-launch":  # needs no MXNet until it starts a job
        assert _run([sys.executable, "-c", code, "--help"], env).returncode == 0
        _one_line(_run([sys.executable, "-c", code, "-n", "1", "true"], env), "launch.py",
                  "cannot import dmlc_tracker")
    else:
        _one_line(_run([sys.executable, "-c", code, "--help"], env), name, message)


@pytest.mark.parametrize("name", sorted(CONSOLE_SCRIPTS))
def test_installed_scripts_print_one_line_without_mxnet(name, shadow):
    env, message = shadow
    script = Path(sysconfig.get_path("scripts")) / name
    assert script.is_file(), f"{script} is missing: pip install -e '.[cpu,test]' regenerates it"
    if name == "gluon-face-launch":
        _one_line(_run([str(script), "-n", "1", "true"], env), "launch.py",
                  "cannot import dmlc_tracker")
    else:
        _one_line(_run([str(script), "--help"], env), name, message)


@pytest.mark.parametrize("name", TOOLS)
def test_tools_print_one_line_without_mxnet(name, shadow):
    env, message = shadow
    tool = [sys.executable, str(ROOT / "tools" / f"{name}.py")]
    if name == "launch":
        assert _run(tool + ["--help"], env).returncode == 0
        _one_line(_run(tool + ["-n", "1", "true"], env), "launch.py",
                  "cannot import dmlc_tracker")
    else:
        prog = "train.py" if name == "train" else name  # the program name of its own errors
        _one_line(_run(tool + ["--help"], env), prog, message)


# ---------------------------------------------------------------- with MXNet
def test_entry_calls_the_signal_wrapper_where_a_command_has_one():
    """``run = with_stop_signals(main)`` where a command has it (launch.run is the job)."""
    import importlib

    for name, (module, function, needs_mxnet) in _entry.COMMANDS.items():
        command = importlib.import_module(f"gluon_face.commands.{module}")
        run = getattr(command, "run", None)
        wrapped = getattr(run, "__qualname__", "").startswith("with_stop_signals.")
        assert function == ("run" if wrapped else "main"), name
        assert needs_mxnet == (name != "launch"), name


def test_with_mxnet_the_entry_runs_the_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["gluon-face-count-params", "--network", "faceresnet18"])
    assert _entry.count_params() == 0
    assert "faceresnet18" in capsys.readouterr().out


def test_with_mxnet_the_installed_script_and_the_tool_run():
    script = Path(sysconfig.get_path("scripts")) / "gluon-face-count-params"
    for args in ([str(script), "--help"],
                 [sys.executable, str(ROOT / "tools" / "count_params.py"), "--help"]):
        proc = _run(args, None)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.startswith("usage: count_params"), proc.stdout[:200]

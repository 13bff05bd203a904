"""The contributor docs describe this repository and nothing outside it."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _layout_block():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    start = text.index("## Layout\n```\n")
    return text[start:text.index("```\n", start + len("## Layout\n```\n"))]


def test_contributing_lists_every_module():
    block = _layout_block()
    words = set(re.findall(r"[\w.]+", block))
    missing = []
    for path in sorted((ROOT / "gluon_face").rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(ROOT / "gluon_face")
        # a subpackage's __init__ is listed by its folder, a module by its file name
        name = rel.parts[-2] + "/" if path.name == "__init__.py" and len(rel.parts) > 1 \
            else path.name
        if name.rstrip("/") not in words:
            missing.append(str(rel))
    assert not missing, f"CONTRIBUTING.md's layout does not list: {missing}"


def test_architecture_paths_exist():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    paths = set(re.findall(r"`((?:gluon_face|tests|tools|chapters)/[\w./<>-]*)`", text))
    assert paths, "ARCHITECTURE.md names no file of the repository"
    missing = [p for p in sorted(paths)
               if "<" not in p and not (ROOT / p.split("::")[0]).exists()]
    assert not missing, f"ARCHITECTURE.md names files that do not exist: {missing}"


def test_no_reference_outside_the_repository():
    pattern = re.compile(r"\.\./shared|/work/|design\.md|design §|\bissue \d+")
    hits = []
    for path in ROOT.rglob("*"):
        if (path.suffix not in {".py", ".md", ".yaml", ".toml", ".cfg", ".txt", ".bib"}
                or any(part.startswith(".") or part in {"__pycache__", "build"}
                       or part.endswith(".egg-info") for part in path.relative_to(ROOT).parts)):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line) and path.name != "test_repository_docs.py":
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)

"""gluon_face._cli: outputs that would replace inputs, one-line argument errors."""
import os

import pytest

from gluon_face._cli import (
    ToolParser,
    UsageError,
    check_outputs,
    int_between,
    non_negative_float,
    positive_int,
)


@pytest.fixture
def tree(tmp_path):
    """``data/`` with ``pairs.txt`` and ``img/a.jpg``; ``out/`` empty."""
    (tmp_path / "data" / "img").mkdir(parents=True)
    (tmp_path / "data" / "pairs.txt").write_text("a b 1\n")
    (tmp_path / "data" / "img" / "a.jpg").write_bytes(b"jpeg")
    (tmp_path / "out").mkdir()
    return tmp_path


def test_check_outputs_accepts_separate_paths(tree):
    check_outputs([str(tree / "out" / "x.bin"), None, str(tree / "out" / "new" / "y.json")],
                  [str(tree / "data" / "img"), str(tree / "data" / "pairs.txt"), None,
                   str(tree / "missing")])
    # a sibling whose name starts like the input folder's is not inside it
    check_outputs([str(tree / "data" / "img2" / "x")], [str(tree / "data" / "img")])


def test_check_outputs_same_file(tree, monkeypatch):
    pairs = str(tree / "data" / "pairs.txt")
    with pytest.raises(UsageError, match=r"pairs\.txt: output would overwrite the input .*pairs"):
        check_outputs([pairs], [pairs])
    monkeypatch.chdir(tree / "data")  # another spelling of the same path
    with pytest.raises(UsageError, match="would overwrite"):
        check_outputs(["../data/./pairs.txt"], [pairs])
    os.symlink(pairs, tree / "out" / "link.txt")  # through a symlink
    with pytest.raises(UsageError, match=r"link\.txt: output would overwrite"):
        check_outputs([str(tree / "out" / "link.txt")], [pairs])
    os.link(pairs, tree / "out" / "hard.txt")  # a hard link is the same file too
    with pytest.raises(UsageError, match=r"hard\.txt: output would overwrite"):
        check_outputs([str(tree / "out" / "hard.txt")], [pairs])


def test_check_outputs_inside_an_input_folder(tree):
    img = str(tree / "data" / "img")
    for out in (tree / "data" / "img" / "a.jpg", tree / "data" / "img" / "new" / "x.bin",
                tree / "data" / "img"):
        with pytest.raises(UsageError, match="output lies inside the input folder .*img"):
            check_outputs([str(out)], [img])
    # through a symlinked folder that leads into the input
    os.symlink(img, tree / "out" / "img_link")
    with pytest.raises(UsageError, match=r"img_link/x\.bin: output lies inside"):
        check_outputs([str(tree / "out" / "img_link" / "x.bin")], [img])
    # an input file's folder is not an input: writing beside it is fine
    check_outputs([str(tree / "data" / "results.json")], [str(tree / "data" / "pairs.txt")])


def test_check_outputs_two_outputs_one_file(tree):
    out = str(tree / "out" / "x.npy")
    with pytest.raises(UsageError, match="the same file is given for two outputs"):
        check_outputs([out, os.path.join(str(tree / "out"), ".", "x.npy")], [])


def test_check_outputs_refuses_a_folder(tree):
    with pytest.raises(UsageError, match="is a folder; give a file name"):
        check_outputs([str(tree / "out")], [])


def test_tool_parser_errors_are_one_line(capsys):
    parser = ToolParser(prog="demo")
    parser.add_argument("--epochs", type=positive_int)
    parser.add_argument("--quality", type=int_between(1, 100))
    parser.add_argument("--atol", type=non_negative_float)
    assert parser.parse_args(["--epochs", "3", "--atol", "0"]).atol == 0.0
    for argv, words in [(["--epoch", "3"], "unrecognized arguments: --epoch"),
                        (["--epochs", "0"], "expected an integer >= 1, got '0'"),
                        (["--epochs", "x"], "got 'x'"),
                        (["--quality", "101"], "in [1, 100]"),
                        (["--atol", "nan"], "finite number >= 0, got 'nan'"),
                        (["--atol=-1e-9"], "got '-1e-9'"),
                        (["--atol", "inf"], "got 'inf'")]:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("demo: error: ") and err.count("\n") == 1 and words in err, err

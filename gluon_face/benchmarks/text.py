"""The benchmark commands' text: comma-separated lists in, aligned tables out.

Standard library only, like :mod:`.timing`: ``tools/benchmark_torch.py`` loads
this file by its path, so its options and tables read like ours.
"""
import argparse

__all__ = ["comma_list", "int_list", "parse_or_status", "text_table", "median_range",
           "describe_row"]


def comma_list(text):
    """argparse type: ``'a, b,'`` -> ``['a', 'b']``."""
    return [v.strip() for v in text.split(",") if v.strip()]


def int_list(what="values", allow_empty=True):
    """argparse type: comma-separated positive integers (``1e5`` allowed).

    ``what`` names the values in the error; ``allow_empty``: whether ``''`` (no
    values) is accepted.
    """
    def parse(text):
        try:
            values = [int(float(v)) for v in comma_list(text)]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers, got {text!r}") from None
        if any(v < 1 for v in values) or not (values or allow_empty):
            raise argparse.ArgumentTypeError(f"{what} must be positive, got {text!r}")
        return values
    parse.__name__ = "int_list"
    return parse


def parse_or_status(parse, argv):
    """``(parse(argv), None)``, or ``(None, status)`` where argparse exits.

    The status is argparse's: 0 after ``--help``, 2 for a bad command line.  A
    command's ``main(argv)`` returns it rather than raising ``SystemExit``, so
    that it can be called in-process.
    """
    try:
        return parse(argv), None
    except SystemExit as exc:
        return None, int(exc.code or 0)


def text_table(head, lines):
    """``head`` and ``lines`` (lists of strings) as left-aligned columns under a rule.

    Returns the table's text, lines joined by newlines (no newline at the end).
    """
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def median_range(value, low, high, unit, digits=2):
    """``'<median> <unit> (<min>-<max>)'``."""
    return f"{value:.{digits}f} {unit} ({low:.{digits}f}-{high:.{digits}f})"


def describe_row(r):
    """``[workload, task, variant, median (min-max)]`` cells of a benchmark row.

    Head rows (``workload == 'head'``) in seconds per step, backbone rows in
    images/s; a head timed without its cross-entropy says so in the task.
    """
    if r.get("workload") == "head":
        return [f"arcface head C={r['num_classes']}",
                f"fwd+bwd B={r['batch_size']}" + ("" if r.get("cross_entropy", True)
                                                  else " no CE"),
                r["mode"], median_range(r["step_s"], r["step_s_min"], r["step_s_max"],
                                        "s/step", 3)]
    return [f"{r['network']} {r['image_size']}px", f"{r['task']} B={r['batch_size']}",
            r["mode"], median_range(r["images_s"], r["images_s_min"], r["images_s_max"],
                                    "img/s")]

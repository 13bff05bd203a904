"""The largest training batch that fits in a memory budget, found in a few runs.

A training step's peak resident set grows about linearly with the batch:
``peak = a + b * batch`` (``a``: libraries, parameters, gradients and optimizer
state; ``b``: the activations kept for the backward pass and their gradients,
per image).  :func:`largest_batch` uses two measured batch sizes to fit that
line, runs the batch the line predicts to be the largest that fits, then steps
or bisects, each time drawing the line through the two runs nearest the limit
(so that a slightly curved growth is still found in a few probes), until two
batches one grid step apart (8 images by default) bracket the answer, or the
probe budget is spent.  The line reported, and extrapolated to a budget the
machine cannot hold, is the least-squares fit over every batch that ran.  Each
probe is a function the caller gives (the benchmark command runs one worker
process per probe), so the search itself is pure.

Standard library only, like :mod:`.timing`.
"""
import math

__all__ = ["ProbeFailed", "fit_line", "largest_batch", "describe_capacity", "describe_fit"]

MIB_PER_GIB = 1024.0


class ProbeFailed(Exception):
    """A probe that could not run, for a reason other than memory (the message says which)."""


def fit_line(points):
    """Least-squares ``(a, b)`` of ``peak = a + b * batch`` over ``{batch: peak}``.

    None with fewer than two distinct batch sizes.
    """
    if len(points) < 2:
        return None
    xs, ys = list(points), [points[x] for x in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def _predict(line, limit, step):
    """Largest batch on the grid whose fitted peak is at most ``limit``; None without a
    rising line."""
    if line is None or not line[1] > 0:
        return None
    return int(math.floor((limit - line[0]) / line[1] / step)) * step


def _local_line(points, lo, hi):
    """The line through the two runs nearest the limit: the largest batch that fits and the
    smallest that does not when both ran (interpolation), else the two largest that ran."""
    if lo in points and hi in points:
        return fit_line({b: points[b] for b in (lo, hi)})
    near = sorted(points)[-2:]
    return fit_line({b: points[b] for b in near})


def largest_batch(probe, limit_mib, seeds=(64, 128), known=None, step=8, max_probes=5,
                  budget_mib=None, progress=None):
    """The largest batch size (on a grid of ``step`` images) whose peak is at most ``limit_mib``.

    Parameters
    ----------
    probe : callable
        ``probe(batch)`` runs a training step at ``batch`` and returns its peak
        in MiB, or None when it did not fit (stopped past the limit, or out of
        memory).  It raises :class:`ProbeFailed` when it could not run for
        another reason; the search then ends with what it has.
    limit_mib : float
        A batch fits when its peak is at most this.
    seeds : sequence of int
        The two (or more) batch sizes measured first to fit the line, when
        ``known`` does not hold two already.  They need not lie on the grid.
    known : dict, optional
        ``{batch: peak MiB or None}`` already measured (e.g. the memory
        table's rows): used like probes, without running them again.
    step : int
        Granularity of the answer: the probes after the seeds are multiples of it.
    max_probes : int
        Probes after the seeds; when they are spent before the answer is
        bracketed the result is not ``exact``.
    budget_mib : float, optional
        The budget asked for, when it is more than ``limit_mib`` (what the
        machine can hold): the result then also holds the line's prediction
        for it, which no probe checked.
    progress : callable, optional
        ``progress(text)`` before each probe: which one, the batch and why.

    Returns
    -------
    dict
        ``largest`` (the largest batch that fitted, None if none did),
        ``peak_mib`` (its peak), ``exact`` (the next grid batch above
        ``largest`` is known not to fit: ``largest`` is the answer),
        ``above`` (smallest batch known not to fit, None if none),
        ``failed`` (``'B=<batch>: <reason>'`` of a probe that could not run,
        else None), ``fit`` (``{'a_mib', 'b_mib', 'batches'}`` of the line
        over every batch that ran, or None), ``predicted`` (for
        ``budget_mib``: the line's largest batch, at least ``largest``; None
        without a budget or a rising line), ``runs`` (``{'batch',
        'peak_mib', 'fits', 'probed'}`` in order; ``probed`` False for
        ``known`` ones), ``probes`` (how many probes ran after the seeds),
        ``limit_mib``, ``budget_mib`` and ``step``.
    """
    if not limit_mib > 0 or step < 1 or max_probes < 0:
        raise ValueError(f"need limit_mib > 0, step >= 1 and max_probes >= 0, got "
                         f"{limit_mib}, {step} and {max_probes}")
    points, runs = {}, []
    state = {"lo": None, "hi": None, "failed": None}

    def take(batch, peak, probed):
        fits = peak is not None and peak <= limit_mib
        runs.append({"batch": batch, "peak_mib": peak, "fits": fits, "probed": probed})
        if peak is not None:
            points[batch] = peak
        if fits:
            state["lo"] = batch if state["lo"] is None else max(state["lo"], batch)
        else:
            state["hi"] = batch if state["hi"] is None else min(state["hi"], batch)
        return fits

    def run(batch, why):
        if progress:
            progress(f"B={batch} ({why})")
        try:
            return take(batch, probe(batch), True)
        except ProbeFailed as err:
            state["failed"] = f"B={batch}: {err}"
            runs.append({"batch": batch, "peak_mib": None, "fits": None, "probed": True})
            return None

    for batch, peak in sorted((known or {}).items()):
        take(int(batch), peak, False)
    for batch in sorted(set(seeds) - set(points) - {r["batch"] for r in runs}):
        if len(points) >= 2 or state["failed"] or (
                state["hi"] is not None and batch >= state["hi"]):
            break  # the line has its two points; or a smaller batch did not fit
        run(batch, "seed, to fit the line")

    probes, same_side, last_fit = 0, 0, None
    while state["failed"] is None and probes < max_probes:
        lo, hi = state["lo"], state["hi"]
        first = ((lo or 0) // step + 1) * step  # smallest grid batch above lo
        if hi is not None and first >= hi:
            break  # bracketed: lo fits, the next grid batch does not
        last = None if hi is None else ((hi - 1) // step) * step  # largest grid batch below hi
        guess = _predict(_local_line(points, lo, hi), limit_mib, step)
        if guess is not None:
            batch, why = guess, "line predicts the largest"
        elif hi is None:
            batch, why = 2 * (lo or step), "doubling"
        else:
            batch, why = ((lo or 0) + hi) // 2, "bisecting"
        if same_side >= 2:  # the line keeps missing on one side: double or halve instead
            if hi is None:
                batch, why = max(batch, 2 * lo), "doubling"
            else:
                batch, why = ((lo or 0) + hi) // 2, "bisecting"
        batch = (batch // step) * step
        if batch < first:
            batch, why = first, "next above the largest that fits"
        elif last is not None and batch > last:
            batch, why = last, "next below the smallest that does not fit"
        probes += 1
        fits = run(batch, f"probe {probes}/{max_probes}: {why}")
        if fits is None:
            break
        same_side = same_side + 1 if fits == last_fit else 1
        last_fit = fits

    lo, hi = state["lo"], state["hi"]
    exact = state["failed"] is None and hi is not None and ((lo or 0) // step + 1) * step >= hi
    line = fit_line(points)
    predicted = None
    if budget_mib is not None:
        predicted = _predict(line, budget_mib, step)
        if predicted is not None and lo is not None:
            predicted = max(predicted, lo)
    return {"largest": lo, "peak_mib": points.get(lo), "exact": exact, "above": hi,
            "failed": state["failed"],
            "fit": None if line is None else {"a_mib": line[0], "b_mib": line[1],
                                              "batches": sorted(points)},
            "predicted": predicted, "runs": runs,
            "probes": probes, "limit_mib": limit_mib, "budget_mib": budget_mib, "step": step}


def _gib(mib):
    return f"{mib / MIB_PER_GIB:.1f} GiB"


def describe_fit(result):
    """``'1.2 GiB + 61 MiB/image (from 64,128,336)'``: the fitted line of a
    :func:`largest_batch` result, or '-'."""
    fit = result.get("fit")
    if not fit:
        return "-"
    return (f"{_gib(fit['a_mib'])} + {fit['b_mib']:.1f} MiB/image "
            f"(from {','.join(str(b) for b in fit['batches'])})")


def _measured(result, fits=""):
    """The measured answer: '336', '≥ 336 (...)' or 'none (...)' (``fits`` after the number)."""
    lo, hi = result["largest"], result["above"]
    if result["exact"]:
        return f"{lo}{fits}" if lo is not None else f"none{fits} ({hi} does not fit)"
    if result["failed"]:
        why = f"{result['failed']}"
    elif hi is not None:
        why = f"{hi} does not fit; probe cap reached"
    else:
        why = "nothing larger probed"
    return f"≥ {lo}{fits} ({why})" if lo is not None else f"none measured ({why})"


def describe_capacity(result):
    """The capacity cell of a :func:`largest_batch` result.

    ``'344'`` when exact; ``'≥ 336 (...)'`` when the search ended before
    bracketing the answer.  When a ``budget_mib`` above ``limit_mib`` was given:
    ``'352 (predicted from 64,128,336,344: peak = 1.2 GiB + 61.0 MiB/image;
    measured up to 21.0 GiB: 336 fits)'``: the line's prediction, marked as one,
    then what was measured within the limit.
    """
    if result.get("budget_mib") is None:
        return _measured(result)
    fit = result.get("fit")
    line = ("no rising line to predict from" if fit is None or result["predicted"] is None
            else f"predicted from {','.join(str(b) for b in fit['batches'])}: peak = "
            f"{_gib(fit['a_mib'])} + {fit['b_mib']:.1f} MiB/image")
    head = "?" if result["predicted"] is None else str(result["predicted"])
    return (f"{head} ({line}; measured up to {_gib(result['limit_mib'])}: "
            f"{_measured(result, ' fits')})")

"""Small pieces shared by the command-line tools (the tools print; this module does not)."""

__all__ = ["error_line", "checkpoint_image_size", "text_table"]


def error_line(prog, err):
    """``'<prog>: error: <first line of err>'``: the one line a tool prints on bad input."""
    text = str(err).strip().splitlines()
    return f"{prog}: error: {text[0] if text else type(err).__name__}"


def checkpoint_image_size(state):
    """(H, W) a checkpoint's backbone was trained at, from its ``state.json`` dict.

    ``ValueError`` naming the checkpoint folder when the entry is missing or malformed.
    """
    size = state.get("image_size")
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise ValueError(f"{state.get('folder', 'checkpoint')}: state.json has no valid "
                         f"image_size (got {size!r})")
    return tuple(int(s) for s in size)


def text_table(head, lines):
    """``head`` and ``lines`` (lists of strings) as left-aligned columns under a rule."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in lines]
    return out

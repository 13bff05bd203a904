#!/usr/bin/env python
"""Launch a parameter-server MXNet job: ``tools/launch.py -n N [-s S] [-H hosts] COMMAND``.

The command lives in :mod:`gluon_face.commands.launch` and is also installed as
``gluon-face-launch``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands._entry import run

if __name__ == "__main__":
    sys.exit(run("launch", prog="launch.py"))

"""Pack an image folder (one sub-folder per identity) into insightface's record layout.

The command lives in :mod:`gluon_face.commands.pack_rec` and is also installed as
``gluon-face-pack-rec``; ``--help`` gives its usage.
"""
import sys

from gluon_face.commands.pack_rec import main

if __name__ == "__main__":
    sys.exit(main())

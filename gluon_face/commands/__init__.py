"""Command-line entry points: each module's main(argv=None) -> int is a tools/*.py script and an installed command."""

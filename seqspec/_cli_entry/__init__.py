"""The installed `seqspec` script's entry point: imports the CLI only inside a Ctrl-C guard.

A console script imports its target module before any of its code runs; importing seqspec
itself (Pydantic, the spec classes) takes about a tenth of a second, and a Ctrl-C then would
print Python's traceback. This package imports nothing at its own import.
"""

import sys


def main() -> int:
    try:
        from seqspec.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("seqspec: interrupted\n")
        return 130
    return run()

"""CLI sub-commands: each module defines ``register(subparsers) -> None``.

``register`` adds one ``argparse`` sub-parser and sets ``func=handler`` on it; the handler takes the
parsed namespace and returns an exit code. :mod:`shieldwall.cli` imports every module here, so a
new command is one new file.
"""

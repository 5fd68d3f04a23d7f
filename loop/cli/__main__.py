"""``python -m loop.cli``: the ``loop`` command."""

from loop.cli import main

main()

"""``python -m workers.cli``: the `atrelay` command, for processes started by path rather than by script."""

from workers.cli.main import main

main()

"""``python -m digitstream``: the same as the ``digitstream`` command."""

from digitstream.clients.cli import main

main()

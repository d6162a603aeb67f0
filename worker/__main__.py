"""``python -m worker``: the same as ``digitstream worker``."""

from digitstream.worker.cli import worker_command

worker_command(prog_name="digitstream worker")

"""One module per group of ``digitstream`` sub-commands."""

"""Clients role: publishing samples, the HTTP prediction client, and the ``digitstream`` CLI."""

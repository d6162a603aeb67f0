"""digitstream: the shared core (learner, wire contract, settings, datasets)."""

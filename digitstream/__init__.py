"""digitstream: handwritten digits recognised by a model that keeps learning from a Redis stream.

The core (learner, wire contract, snapshot format, settings, datasets) sits in this package's own
modules; the roles are its sub-packages ``digitstream.worker``, ``digitstream.service`` and
``digitstream.clients``, which import the core and never each other.
"""

__version__ = "0.2.0"

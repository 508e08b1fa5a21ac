"""healthtwin: healthcare digital twins on a durable, auditable digital thread.

Layout (see docs/ARCHITECTURE.md): ``thread`` crosses the boundary with the physical world,
``twin`` is the virtual entity (state, journal, store), ``models`` is pure mathematics,
``care`` / ``operations`` / ``research`` are the three kinds of twin, ``trust`` is governance,
``serve`` the HTTP API.
"""

__version__ = "0.1.0"

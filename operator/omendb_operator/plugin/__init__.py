"""``kubectl-omendb``: the kubectl plugin an on-call engineer reaches for first (``kubectl omendb ...``).

``builders`` makes the objects it creates (pure), ``render`` formats what it reads (pure), ``cli`` is the
thin shell that talks to the API server.
"""

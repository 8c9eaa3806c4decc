"""The round engine: one implementation of a federation's rounds, with no Django.

A round sums one vector per site, plainly or under secure aggregation, and decodes the
sum into what the round produces. The engine holds every part of it that is not storage
or scheduling:

- :mod:`.rounds`: the kinds of round and their stages, the input layout of each kind
  (its length, fixed-point range and weight scale) and a round's public parameters;
- :mod:`.admission`: why a round may not open, as pure functions;
- :mod:`.training`: how a federation trains, a site's local update, and the training
  vector with its decoding;
- :mod:`.site`: the site's side: its input for each kind, and its answer to each stage;
- :mod:`.coordinator`: the coordinator's side: the work each site gets, the checks on
  what it sends, the end of a stage, the sum, and the decoding of the sum into an outcome;
- :mod:`.simulation`: the in-process driver: every site and the coordinator in one
  process, exchanging the same messages through an in-memory store.

Two drivers run it: the coordinator (``federation.services``: Django models for
storage, Celery for scheduling, the site API for transport, ``worker.site_runtime`` at
each site) and :mod:`.simulation` (for research, benchmarks and the accuracy report).
"""

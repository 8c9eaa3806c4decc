"""Secure aggregation (Bonawitz et al. 2017, with the SecAgg+ neighbour graph of Bell et al. 2020).

- ``primitives``: key agreement, encryption of shares, signatures, Shamir sharing,
  the mask PRG, quantisation;
- ``protocol``: the stages, message keys, the neighbour graph and a round's parameters;
- ``client`` and ``server``: the two sides of one secure sum;
- ``wire``: the JSON form of every message, checked on the way in.

The round engine (:mod:`federation.core.engine`) runs them, in live rounds over HTTP and
in the simulation in one process.
"""

"""Secure aggregation (Bonawitz et al. 2017, with the SecAgg+ neighbour graph of Bell et al. 2020).

So far: the cryptographic primitives. The protocol stages, their client and server
sides and the integration with rounds build on them.
"""

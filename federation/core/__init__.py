"""The federation's Django-free core: the round engine, aggregation strategies, secure
aggregation, federated analytics, privacy accounting, and the accuracy report."""

"""Writes: every change to the federation app's state goes through a function here.

- :mod:`.sites`: sites, their credentials and identity keys, their data summaries, and
  their memberships;
- :mod:`.federations`: creating a federation, starting or resuming it;
- :mod:`.rounds`: opening rounds (or refusing to, with the reason), analytics queries,
  failing a round, resuming after a restart;
- :mod:`.stages`: the work a site pulls, what it sends in each stage, the end of a
  stage, the aggregation of a complete round;
- :mod:`.versions`: the global model's versions and the federation's state as the round
  engine takes it.
"""

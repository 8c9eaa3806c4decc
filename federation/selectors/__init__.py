"""Reads for the API, the pages and the commands, by subject.

- :mod:`.federations`: the list, a federation's progress and rounds, who may see what;
- :mod:`.budget`: the privacy budget and ledgers;
- :mod:`.sites`: what a site sees of itself, and its owner's portal;
- :mod:`.fleet`: the fleet's scaling statistics and analytics queries, as data.
"""

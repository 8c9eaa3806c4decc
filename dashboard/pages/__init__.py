"""The browser pages about federations and sites: each view parses its input, calls one
service or selector, and renders or redirects.

- :mod:`.accounts`: signing up;
- :mod:`.federations`: the federations, one followed live, its admin's actions;
- :mod:`.sites`: a site owner's sites and portal;
- :mod:`.fleet`: a federation's fleet health and analytics queries;
- :mod:`.access`: who may see what.
"""

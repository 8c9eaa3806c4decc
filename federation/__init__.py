"""Federations, sites, rounds and models (Django app) around a Django-free core."""

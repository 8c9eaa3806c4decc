"""The site's own console: its fleet, what joining is worth, what left, who it talks to.

Served by the site's own process (``manage.py site_console``) on the loopback address,
from the site's folders, never by the coordinator.
"""

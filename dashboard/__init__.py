"""Pages people open: the federation dashboard and the maintenance-strategy replay."""

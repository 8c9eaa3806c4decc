"""C-MAPSS data: locating, strict parsing, features, windows and partitions."""

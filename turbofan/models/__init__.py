"""RUL models: a PyTorch sequence network, a gradient-boosting baseline, and their artefact."""

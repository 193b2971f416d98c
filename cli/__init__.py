"""pvc: the command-line client of a PVC cluster. It talks only HTTP to the PVC API."""

__version__ = "0.1.0"

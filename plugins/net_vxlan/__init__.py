"""Managed networks: a VXLAN per network between the nodes' VTEPs."""

"""Client networks: the network model (``/networks``, ``/api/v1/network``, ``pvc network``),
each node's bridges ``vmbr<vni>``, and bridged networks on the cluster's VLANs."""

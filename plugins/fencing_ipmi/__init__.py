"""Fencing of dead nodes through their BMC (IPMI over LAN), then recovery of their VMs."""

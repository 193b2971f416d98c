"""Built-in plugin: VM snapshots (all of a VM's volumes at one moment, with its XML and
metadata); exports, backups and mirrors follow (docs/data-protection-plan.md)."""

"""The ``provisioner`` plugin: VM templates, profiles, install scripts and OVA images
(docs/provisioner.md)."""

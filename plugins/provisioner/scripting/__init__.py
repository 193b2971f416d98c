"""Running administrators' provisioner scripts: the import names scripts written for the
original PVC use, provided inside the runner only (docs/provisioner.md)."""

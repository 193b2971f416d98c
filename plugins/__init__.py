"""PVC's built-in plugins; each registers in the ``pvc.plugins`` entry-point group."""

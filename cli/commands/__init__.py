"""Core command groups of `pvc`, each imported only when used."""

"""Node and cluster health: health checks from every plugin run on every node (docs/health.md)."""

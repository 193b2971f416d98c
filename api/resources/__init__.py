"""Route handlers, one module per area; the table in ``pvc_api.routes`` points at them."""

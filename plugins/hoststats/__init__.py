"""Built-in plugin: host load and memory figures in every keepalive."""

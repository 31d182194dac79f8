"""The local stack: definition (local/stack.toml), installers, supervisor, health checks, compose export."""

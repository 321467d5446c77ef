"""Support package of the coreheap Python scenarios (stdlib only, 3.8+)."""

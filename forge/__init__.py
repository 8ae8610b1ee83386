"""forge (placeholder; public surface comes with the core)."""

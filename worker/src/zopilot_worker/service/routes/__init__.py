"""HTTP routes, one module per concern: probes and metrics, extraction, classification."""

"""Reports of the measurements: terminal summary, JSON, HTML."""

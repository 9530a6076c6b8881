"""`llmobs top`: a terminal view of a running proxy's /metrics, refreshed every second."""

"""Per-API adapters: classify a path, read the request, account the response into an Observation."""

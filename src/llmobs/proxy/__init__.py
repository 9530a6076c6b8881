"""The HTTP plumbing: admit, forward and relay a request; knows nothing of LLM APIs."""

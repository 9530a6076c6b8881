"""The simulated upstream: speaks the wire formats of the APIs llmobs observes (demo, tests, benchmarks)."""

from llmobs.sim.app import SimConfig, create_app

__all__ = ["SimConfig", "create_app"]

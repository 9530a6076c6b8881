"""The simulated upstream: speaks the wire formats of the APIs llmobs observes (demo, tests, benchmarks)."""

from llmobs.sim.app import create_app
from llmobs.sim.common import SimConfig

__all__ = ["SimConfig", "create_app"]

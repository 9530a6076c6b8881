"""Demo and test/benchmark harness: never imported by the runtime."""

"""Recording: pricing, label bounds, and the sinks (Prometheus, OpenTelemetry) behind the recorder."""

"""What a running node tells its operator: logs and Prometheus metrics."""

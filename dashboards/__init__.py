"""Grafana dashboard and Prometheus configuration for a boltpipe cluster."""

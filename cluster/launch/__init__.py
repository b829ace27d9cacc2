"""Bringing a cluster from an inventory to serving: the model directory, credentials, local worker
processes (kept running) and SSH nodes, loading the slices, and checking that every node serves."""

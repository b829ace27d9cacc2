"""`cluster bench`: the cluster against one mlx-lm process on the same model, measured in one run
(single stream, and many streams at once)."""

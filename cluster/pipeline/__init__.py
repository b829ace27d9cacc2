"""The coordinator's side of the data plane: the gRPC streams into and out of the stages, the
watch on every stage, and the engine that drives one generation through them (tokenizer, text
out, replay)."""

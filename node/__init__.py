"""The boltpipe worker: serves one contiguous slice of a model's layers over gRPC."""

__version__ = "0.1.0"

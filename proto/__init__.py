"""boltpipe's wire protocol: boltpipe.proto and its generated modules."""

PROTOCOL_VERSION = 1

# Largest message either side accepts: a prefill chunk of hidden states
# (chunk tokens x hidden size x 4 bytes) must fit.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def grpc_options() -> list[tuple[str, int]]:
    """Options for every boltpipe gRPC server and channel."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Never share a port silently with another process.
        ("grpc.so_reuseport", 0),
    ]

# A worker prints this line (then name=, port=, pid=) once it listens; local
# launchers wait for it.
WORKER_READY_MARKER = "BOLTPIPE_WORKER_READY"

"""boltpipe's wire protocol: boltpipe.proto and its generated modules."""

PROTOCOL_VERSION = 5  # 2: Steps carries StepGroups (batched decode); 3: speculative steps (draft_ids); 4: kept prefixes;
# 5: logits processors and constrained decoding

# Message size limits, one for every boltpipe server and channel, sending and receiving.
# The largest legitimate message is a Step carrying a prefill chunk of hidden states:
# MAX_STEP_TOKENS x hidden size x 4 bytes (float32, the widest dtype on the wire), plus the
# envelope (ids, sampling, timings: a few kilobytes). Sized for models up to MAX_HIDDEN_SIZE wide;
# anything larger is refused by gRPC itself with RESOURCE_EXHAUSTED before a worker reads it. Below
# it, a worker refuses a Step whose tensor or token ids exceed its own slice's shape, or that carries
# more than 64 KiB of sampling and timings on to later stages (node/step_validation.py).
MAX_STEP_TOKENS = 8192              # token positions in one Step (the inventory's prefill_chunk is at most this)
MAX_HIDDEN_SIZE = 8192              # Llama-3 70B; a wider model needs a larger limit here
WIRE_FLOAT_BYTES = 4
MESSAGE_ENVELOPE_BYTES = 1 << 20
MAX_MESSAGE_BYTES = MAX_STEP_TOKENS * MAX_HIDDEN_SIZE * WIRE_FLOAT_BYTES + MESSAGE_ENVELOPE_BYTES  # 257 MiB


def grpc_options() -> list[tuple[str, int]]:
    """Options for every boltpipe gRPC server and channel."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Never share a port silently with another process.
        ("grpc.so_reuseport", 0),
        # A peer that vanished without closing its connections (a machine unplugged) is noticed
        # within seconds, not at TCP's timeout: long-lived streams then break and reconnect.
        ("grpc.keepalive_time_ms", 5000),
        ("grpc.keepalive_timeout_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Servers: accept those pings (gRPC's default would answer them with GOAWAY).
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 4000),
    ]

# A worker prints this line (then name=, port=, pid=) once it listens; local
# launchers wait for it.
WORKER_READY_MARKER = "BOLTPIPE_WORKER_READY"

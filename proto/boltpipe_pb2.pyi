from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("data", "dtype", "shape")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, data: _Optional[bytes] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "boltpipe_version", "protocol_version", "hostname", "platform", "backends", "total_memory_bytes", "peak_rss_bytes", "rss_bytes", "loaded", "slice", "active_sessions", "kv_cache_bytes", "pid", "usable_memory_bytes", "machine", "machine_id", "interfaces", "recent_step_ms", "steps_done", "metrics_port", "blas", "recent_batch_size", "rollback_horizon", "rollback_problem", "prefixes", "prefix_bytes", "constraint_problem")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BOLTPIPE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEAK_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    USABLE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    RECENT_STEP_MS_FIELD_NUMBER: _ClassVar[int]
    STEPS_DONE_FIELD_NUMBER: _ClassVar[int]
    METRICS_PORT_FIELD_NUMBER: _ClassVar[int]
    BLAS_FIELD_NUMBER: _ClassVar[int]
    RECENT_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_HORIZON_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    PREFIX_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    boltpipe_version: str
    protocol_version: int
    hostname: str
    platform: str
    backends: _containers.RepeatedScalarFieldContainer[str]
    total_memory_bytes: int
    peak_rss_bytes: int
    rss_bytes: int
    loaded: bool
    slice: SliceSpec
    active_sessions: int
    kv_cache_bytes: int
    pid: int
    usable_memory_bytes: int
    machine: str
    machine_id: str
    interfaces: _containers.RepeatedCompositeFieldContainer[NetInterface]
    recent_step_ms: float
    steps_done: int
    metrics_port: int
    blas: str
    recent_batch_size: float
    rollback_horizon: int
    rollback_problem: str
    prefixes: int
    prefix_bytes: int
    constraint_problem: str
    def __init__(self, node_id: _Optional[str] = ..., boltpipe_version: _Optional[str] = ..., protocol_version: _Optional[int] = ..., hostname: _Optional[str] = ..., platform: _Optional[str] = ..., backends: _Optional[_Iterable[str]] = ..., total_memory_bytes: _Optional[int] = ..., peak_rss_bytes: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., loaded: _Optional[bool] = ..., slice: _Optional[_Union[SliceSpec, _Mapping]] = ..., active_sessions: _Optional[int] = ..., kv_cache_bytes: _Optional[int] = ..., pid: _Optional[int] = ..., usable_memory_bytes: _Optional[int] = ..., machine: _Optional[str] = ..., machine_id: _Optional[str] = ..., interfaces: _Optional[_Iterable[_Union[NetInterface, _Mapping]]] = ..., recent_step_ms: _Optional[float] = ..., steps_done: _Optional[int] = ..., metrics_port: _Optional[int] = ..., blas: _Optional[str] = ..., recent_batch_size: _Optional[float] = ..., rollback_horizon: _Optional[int] = ..., rollback_problem: _Optional[str] = ..., prefixes: _Optional[int] = ..., prefix_bytes: _Optional[int] = ..., constraint_problem: _Optional[str] = ...) -> None: ...

class NetInterface(_message.Message):
    __slots__ = ("name", "address", "prefix_len", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    prefix_len: int
    kind: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., prefix_len: _Optional[int] = ..., kind: _Optional[str] = ...) -> None: ...

class SliceSpec(_message.Message):
    __slots__ = ("model_path", "layer_start", "layer_end", "num_layers", "stage_index", "num_stages", "next_address", "backend", "max_sessions", "kv_budget_bytes", "model_id", "memory_limit_bytes")
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    LAYER_START_FIELD_NUMBER: _ClassVar[int]
    LAYER_END_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    STAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    NUM_STAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    KV_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    model_path: str
    layer_start: int
    layer_end: int
    num_layers: int
    stage_index: int
    num_stages: int
    next_address: str
    backend: str
    max_sessions: int
    kv_budget_bytes: int
    model_id: str
    memory_limit_bytes: int
    def __init__(self, model_path: _Optional[str] = ..., layer_start: _Optional[int] = ..., layer_end: _Optional[int] = ..., num_layers: _Optional[int] = ..., stage_index: _Optional[int] = ..., num_stages: _Optional[int] = ..., next_address: _Optional[str] = ..., backend: _Optional[str] = ..., max_sessions: _Optional[int] = ..., kv_budget_bytes: _Optional[int] = ..., model_id: _Optional[str] = ..., memory_limit_bytes: _Optional[int] = ...) -> None: ...

class LoadProgress(_message.Message):
    __slots__ = ("phase", "done", "total", "message", "info")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    phase: str
    done: int
    total: int
    message: str
    info: NodeInfo
    def __init__(self, phase: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., message: _Optional[str] = ..., info: _Optional[_Union[NodeInfo, _Mapping]] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("session_ids", "keep", "drop_prefixes")
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    DROP_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    keep: _containers.RepeatedCompositeFieldContainer[KeepPrefix]
    drop_prefixes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_ids: _Optional[_Iterable[str]] = ..., keep: _Optional[_Iterable[_Union[KeepPrefix, _Mapping]]] = ..., drop_prefixes: _Optional[_Iterable[str]] = ...) -> None: ...

class KeepPrefix(_message.Message):
    __slots__ = ("session_id", "prefix_id", "tokens")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PREFIX_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    prefix_id: str
    tokens: int
    def __init__(self, session_id: _Optional[str] = ..., prefix_id: _Optional[str] = ..., tokens: _Optional[int] = ...) -> None: ...

class EndSessionReply(_message.Message):
    __slots__ = ("ended",)
    ENDED_FIELD_NUMBER: _ClassVar[int]
    ended: int
    def __init__(self, ended: _Optional[int] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthReply(_message.Message):
    __slots__ = ("status", "active_sessions", "uptime_ms")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_MS_FIELD_NUMBER: _ClassVar[int]
    status: str
    active_sessions: int
    uptime_ms: int
    def __init__(self, status: _Optional[str] = ..., active_sessions: _Optional[int] = ..., uptime_ms: _Optional[int] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "has_seed", "seed", "top_logprobs", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias")
    class LogitBiasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    HAS_SEED_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    MIN_P_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_PENALTY_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    LOGIT_BIAS_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    has_seed: bool
    seed: int
    top_logprobs: int
    min_p: float
    presence_penalty: float
    frequency_penalty: float
    repetition_penalty: float
    logit_bias: _containers.ScalarMap[int, float]
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., has_seed: _Optional[bool] = ..., seed: _Optional[int] = ..., top_logprobs: _Optional[int] = ..., min_p: _Optional[float] = ..., presence_penalty: _Optional[float] = ..., frequency_penalty: _Optional[float] = ..., repetition_penalty: _Optional[float] = ..., logit_bias: _Optional[_Mapping[int, float]] = ...) -> None: ...

class Constraint(_message.Message):
    __slots__ = ("grammar", "consumed_ids")
    GRAMMAR_FIELD_NUMBER: _ClassVar[int]
    CONSUMED_IDS_FIELD_NUMBER: _ClassVar[int]
    grammar: str
    consumed_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, grammar: _Optional[str] = ..., consumed_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "recv_ns", "compute_start_ns", "compute_end_ns", "send_ns", "next_clock_offset_ns", "next_clock_known")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    RECV_NS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_START_NS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_END_NS_FIELD_NUMBER: _ClassVar[int]
    SEND_NS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CLOCK_OFFSET_NS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CLOCK_KNOWN_FIELD_NUMBER: _ClassVar[int]
    stage: int
    recv_ns: int
    compute_start_ns: int
    compute_end_ns: int
    send_ns: int
    next_clock_offset_ns: int
    next_clock_known: bool
    def __init__(self, stage: _Optional[int] = ..., recv_ns: _Optional[int] = ..., compute_start_ns: _Optional[int] = ..., compute_end_ns: _Optional[int] = ..., send_ns: _Optional[int] = ..., next_clock_offset_ns: _Optional[int] = ..., next_clock_known: _Optional[bool] = ...) -> None: ...

class ClockRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClockReply(_message.Message):
    __slots__ = ("recv_ns", "send_ns", "machine_id")
    RECV_NS_FIELD_NUMBER: _ClassVar[int]
    SEND_NS_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    recv_ns: int
    send_ns: int
    machine_id: str
    def __init__(self, recv_ns: _Optional[int] = ..., send_ns: _Optional[int] = ..., machine_id: _Optional[str] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("session_id", "step_id", "position", "token_ids", "hidden", "want_token", "sampling", "reply_to", "timings", "decode", "draft_ids", "prefix_id", "context_ids", "constraint")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    WANT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_IDS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_IDS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    step_id: int
    position: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    hidden: Tensor
    want_token: bool
    sampling: SamplingParams
    reply_to: str
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    decode: bool
    draft_ids: _containers.RepeatedScalarFieldContainer[int]
    prefix_id: str
    context_ids: _containers.RepeatedScalarFieldContainer[int]
    constraint: Constraint
    def __init__(self, session_id: _Optional[str] = ..., step_id: _Optional[int] = ..., position: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ..., hidden: _Optional[_Union[Tensor, _Mapping]] = ..., want_token: _Optional[bool] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., reply_to: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., decode: _Optional[bool] = ..., draft_ids: _Optional[_Iterable[int]] = ..., prefix_id: _Optional[str] = ..., context_ids: _Optional[_Iterable[int]] = ..., constraint: _Optional[_Union[Constraint, _Mapping]] = ...) -> None: ...

class StepGroup(_message.Message):
    __slots__ = ("steps",)
    STEPS_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    def __init__(self, steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ...) -> None: ...

class TopLogprob(_message.Message):
    __slots__ = ("token_id", "logprob")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    token_id: int
    logprob: float
    def __init__(self, token_id: _Optional[int] = ..., logprob: _Optional[float] = ...) -> None: ...

class StepResult(_message.Message):
    __slots__ = ("session_id", "step_id", "token_id", "logprob", "top_logprobs", "timings", "error", "failed_stage", "decode", "stage_lost", "more_tokens")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FAILED_STAGE_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    STAGE_LOST_FIELD_NUMBER: _ClassVar[int]
    MORE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    step_id: int
    token_id: int
    logprob: float
    top_logprobs: _containers.RepeatedCompositeFieldContainer[TopLogprob]
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    error: str
    failed_stage: int
    decode: bool
    stage_lost: bool
    more_tokens: _containers.RepeatedCompositeFieldContainer[ChosenToken]
    def __init__(self, session_id: _Optional[str] = ..., step_id: _Optional[int] = ..., token_id: _Optional[int] = ..., logprob: _Optional[float] = ..., top_logprobs: _Optional[_Iterable[_Union[TopLogprob, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., error: _Optional[str] = ..., failed_stage: _Optional[int] = ..., decode: _Optional[bool] = ..., stage_lost: _Optional[bool] = ..., more_tokens: _Optional[_Iterable[_Union[ChosenToken, _Mapping]]] = ...) -> None: ...

class ChosenToken(_message.Message):
    __slots__ = ("token_id", "logprob", "top_logprobs")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    token_id: int
    logprob: float
    top_logprobs: _containers.RepeatedCompositeFieldContainer[TopLogprob]
    def __init__(self, token_id: _Optional[int] = ..., logprob: _Optional[float] = ..., top_logprobs: _Optional[_Iterable[_Union[TopLogprob, _Mapping]]] = ...) -> None: ...

class StepAck(_message.Message):
    __slots__ = ("error", "session_id")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    error: str
    session_id: str
    def __init__(self, error: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class ResultsRequest(_message.Message):
    __slots__ = ("reply_to",)
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    reply_to: str
    def __init__(self, reply_to: _Optional[str] = ...) -> None: ...

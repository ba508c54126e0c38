from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FiredRule(_message.Message):
    __slots__ = ("policy", "rule", "action")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    policy: str
    rule: str
    action: str
    def __init__(self, policy: _Optional[str] = ..., rule: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class DecisionRecord(_message.Message):
    __slots__ = ("decision", "policy", "rule", "reason", "user", "environment", "timestamp", "request_id", "org", "team", "model", "provider", "mode", "would_decide", "compliance", "fired", "redactions", "usage", "cost_usd", "latency_us", "policy_version", "error_code", "alerts", "degraded", "trace_id", "phase")
    class RedactionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DECISION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    WOULD_DECIDE_FIELD_NUMBER: _ClassVar[int]
    COMPLIANCE_FIELD_NUMBER: _ClassVar[int]
    FIRED_FIELD_NUMBER: _ClassVar[int]
    REDACTIONS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    decision: str
    policy: str
    rule: str
    reason: str
    user: str
    environment: str
    timestamp: str
    request_id: str
    org: str
    team: str
    model: str
    provider: str
    mode: str
    would_decide: str
    compliance: _containers.RepeatedScalarFieldContainer[str]
    fired: _containers.RepeatedCompositeFieldContainer[FiredRule]
    redactions: _containers.ScalarMap[str, int]
    usage: Usage
    cost_usd: float
    latency_us: int
    policy_version: str
    error_code: str
    alerts: _containers.RepeatedScalarFieldContainer[str]
    degraded: _containers.RepeatedScalarFieldContainer[str]
    trace_id: str
    phase: str
    def __init__(self, decision: _Optional[str] = ..., policy: _Optional[str] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ..., user: _Optional[str] = ..., environment: _Optional[str] = ..., timestamp: _Optional[str] = ..., request_id: _Optional[str] = ..., org: _Optional[str] = ..., team: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., mode: _Optional[str] = ..., would_decide: _Optional[str] = ..., compliance: _Optional[_Iterable[str]] = ..., fired: _Optional[_Iterable[_Union[FiredRule, _Mapping]]] = ..., redactions: _Optional[_Mapping[str, int]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., cost_usd: _Optional[float] = ..., latency_us: _Optional[int] = ..., policy_version: _Optional[str] = ..., error_code: _Optional[str] = ..., alerts: _Optional[_Iterable[str]] = ..., degraded: _Optional[_Iterable[str]] = ..., trace_id: _Optional[str] = ..., phase: _Optional[str] = ...) -> None: ...

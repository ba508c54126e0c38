import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from policy_extproc.v1 import decision_pb2 as _decision_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_APPROVE: _ClassVar[Verdict]
    VERDICT_DENY: _ClassVar[Verdict]
VERDICT_UNSPECIFIED: Verdict
VERDICT_APPROVE: Verdict
VERDICT_DENY: Verdict

class PolicyInfo(_message.Message):
    __slots__ = ("name", "source", "file", "line", "org", "team", "environment", "mode", "rules", "description", "compliance")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COMPLIANCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    file: str
    line: int
    org: str
    team: str
    environment: str
    mode: str
    rules: int
    description: str
    compliance: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., file: _Optional[str] = ..., line: _Optional[int] = ..., org: _Optional[str] = ..., team: _Optional[str] = ..., environment: _Optional[str] = ..., mode: _Optional[str] = ..., rules: _Optional[int] = ..., description: _Optional[str] = ..., compliance: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies", "version", "repository_version", "loaded_at", "last_error")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[PolicyInfo]
    version: str
    repository_version: int
    loaded_at: _timestamp_pb2.Timestamp
    last_error: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, policies: _Optional[_Iterable[_Union[PolicyInfo, _Mapping]]] = ..., version: _Optional[str] = ..., repository_version: _Optional[int] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[_Iterable[str]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy", "text")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    policy: PolicyInfo
    text: str
    def __init__(self, policy: _Optional[_Union[PolicyInfo, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class PutPoliciesRequest(_message.Message):
    __slots__ = ("text", "file_name")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    text: str
    file_name: str
    def __init__(self, text: _Optional[str] = ..., file_name: _Optional[str] = ...) -> None: ...

class PutPoliciesResponse(_message.Message):
    __slots__ = ("names", "version", "repository_version")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_VERSION_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    version: str
    repository_version: int
    def __init__(self, names: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., repository_version: _Optional[int] = ...) -> None: ...

class DeletePolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePolicyResponse(_message.Message):
    __slots__ = ("version", "repository_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    repository_version: int
    def __init__(self, version: _Optional[str] = ..., repository_version: _Optional[int] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("body", "path", "headers", "policies", "file_name")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BODY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    path: str
    headers: _containers.ScalarMap[str, str]
    policies: str
    file_name: str
    def __init__(self, body: _Optional[bytes] = ..., path: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., policies: _Optional[str] = ..., file_name: _Optional[str] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("decision", "explanation", "body")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    decision: _decision_pb2.DecisionRecord
    explanation: _containers.RepeatedScalarFieldContainer[str]
    body: bytes
    def __init__(self, decision: _Optional[_Union[_decision_pb2.DecisionRecord, _Mapping]] = ..., explanation: _Optional[_Iterable[str]] = ..., body: _Optional[bytes] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("id", "org", "user", "status", "created_at", "expires_at", "approver", "reason", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    id: str
    org: str
    user: str
    status: str
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    approver: str
    reason: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., org: _Optional[str] = ..., user: _Optional[str] = ..., status: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., approver: _Optional[str] = ..., reason: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListApprovalsRequest(_message.Message):
    __slots__ = ("org", "status")
    ORG_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    org: str
    status: str
    def __init__(self, org: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class ListApprovalsResponse(_message.Message):
    __slots__ = ("approvals",)
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    def __init__(self, approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ...) -> None: ...

class DecideApprovalRequest(_message.Message):
    __slots__ = ("id", "verdict", "approver", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    verdict: Verdict
    approver: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., approver: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchDecisionsRequest(_message.Message):
    __slots__ = ("org", "decisions")
    ORG_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    org: str
    decisions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, org: _Optional[str] = ..., decisions: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchDecisionsResponse(_message.Message):
    __slots__ = ("record", "dropped")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    record: _decision_pb2.DecisionRecord
    dropped: int
    def __init__(self, record: _Optional[_Union[_decision_pb2.DecisionRecord, _Mapping]] = ..., dropped: _Optional[int] = ...) -> None: ...

from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditQueryRequest(_message.Message):
    __slots__ = ("patient_id", "principal", "to", "limit")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    principal: str
    to: str
    limit: int
    def __init__(self, patient_id: _Optional[str] = ..., principal: _Optional[str] = ..., to: _Optional[str] = ..., limit: _Optional[int] = ..., **kwargs) -> None: ...

class AuditQueryResponse(_message.Message):
    __slots__ = ("records", "truncated")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    truncated: bool
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("seq", "time", "principal", "auth", "roles", "issuer", "key_id", "client", "rpc", "action", "feature_set", "datasets", "patient_ids", "bulk_count", "bulk_blake3", "decision", "reason", "outcome", "error", "training_set", "hash", "prev")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SET_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    PATIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    BULK_COUNT_FIELD_NUMBER: _ClassVar[int]
    BULK_BLAKE3_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRAINING_SET_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    PREV_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: str
    principal: str
    auth: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    issuer: str
    key_id: str
    client: str
    rpc: str
    action: str
    feature_set: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    patient_ids: _containers.RepeatedScalarFieldContainer[str]
    bulk_count: int
    bulk_blake3: str
    decision: str
    reason: str
    outcome: str
    error: str
    training_set: str
    hash: str
    prev: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[str] = ..., principal: _Optional[str] = ..., auth: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., issuer: _Optional[str] = ..., key_id: _Optional[str] = ..., client: _Optional[str] = ..., rpc: _Optional[str] = ..., action: _Optional[str] = ..., feature_set: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ..., patient_ids: _Optional[_Iterable[str]] = ..., bulk_count: _Optional[int] = ..., bulk_blake3: _Optional[str] = ..., decision: _Optional[str] = ..., reason: _Optional[str] = ..., outcome: _Optional[str] = ..., error: _Optional[str] = ..., training_set: _Optional[str] = ..., hash: _Optional[str] = ..., prev: _Optional[str] = ...) -> None: ...

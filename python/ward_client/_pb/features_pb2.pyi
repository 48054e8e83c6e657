from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValueStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_STATUS_UNSPECIFIED: _ClassVar[ValueStatus]
    PRESENT: _ClassVar[ValueStatus]
    NO_DATA: _ClassVar[ValueStatus]
    OUTSIDE_TTL: _ClassVar[ValueStatus]
VALUE_STATUS_UNSPECIFIED: ValueStatus
PRESENT: ValueStatus
NO_DATA: ValueStatus
OUTSIDE_TTL: ValueStatus

class ListFeatureSetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFeatureSetsResponse(_message.Message):
    __slots__ = ("sets",)
    SETS_FIELD_NUMBER: _ClassVar[int]
    sets: _containers.RepeatedCompositeFieldContainer[FeatureSetInfo]
    def __init__(self, sets: _Optional[_Iterable[_Union[FeatureSetInfo, _Mapping]]] = ...) -> None: ...

class FeatureSetInfo(_message.Message):
    __slots__ = ("name", "definition", "features", "timeline", "online", "entity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    definition: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureInfo]
    timeline: str
    online: bool
    entity: str
    def __init__(self, name: _Optional[str] = ..., definition: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureInfo, _Mapping]]] = ..., timeline: _Optional[str] = ..., online: _Optional[bool] = ..., entity: _Optional[str] = ...) -> None: ...

class FeatureInfo(_message.Message):
    __slots__ = ("name", "kind", "is_label", "ttl_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    IS_LABEL_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    is_label: bool
    ttl_seconds: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., is_label: _Optional[bool] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class MaterializeRequest(_message.Message):
    __slots__ = ("feature_set", "as_occurred", "full", "entity")
    FEATURE_SET_FIELD_NUMBER: _ClassVar[int]
    AS_OCCURRED_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    feature_set: str
    as_occurred: bool
    full: bool
    entity: str
    def __init__(self, feature_set: _Optional[str] = ..., as_occurred: _Optional[bool] = ..., full: _Optional[bool] = ..., entity: _Optional[str] = ...) -> None: ...

class MaterializeResponse(_message.Message):
    __slots__ = ("timeline", "definition", "change_points", "patients", "created", "previous", "full_reason", "reused", "mpi_links")
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    CHANGE_POINTS_FIELD_NUMBER: _ClassVar[int]
    PATIENTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    FULL_REASON_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    MPI_LINKS_FIELD_NUMBER: _ClassVar[int]
    timeline: str
    definition: str
    change_points: int
    patients: int
    created: bool
    previous: str
    full_reason: str
    reused: int
    mpi_links: str
    def __init__(self, timeline: _Optional[str] = ..., definition: _Optional[str] = ..., change_points: _Optional[int] = ..., patients: _Optional[int] = ..., created: _Optional[bool] = ..., previous: _Optional[str] = ..., full_reason: _Optional[str] = ..., reused: _Optional[int] = ..., mpi_links: _Optional[str] = ...) -> None: ...

class OnlineRequest(_message.Message):
    __slots__ = ("feature_set", "patient_ids", "as_of", "features")
    FEATURE_SET_FIELD_NUMBER: _ClassVar[int]
    PATIENT_IDS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    feature_set: str
    patient_ids: _containers.RepeatedScalarFieldContainer[str]
    as_of: str
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, feature_set: _Optional[str] = ..., patient_ids: _Optional[_Iterable[str]] = ..., as_of: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class FeatureValue(_message.Message):
    __slots__ = ("num", "text", "status")
    NUM_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    num: float
    text: str
    status: ValueStatus
    def __init__(self, num: _Optional[float] = ..., text: _Optional[str] = ..., status: _Optional[_Union[ValueStatus, str]] = ...) -> None: ...

class PatientFeatures(_message.Message):
    __slots__ = ("patient_id", "values", "person_id")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    values: _containers.RepeatedCompositeFieldContainer[FeatureValue]
    person_id: str
    def __init__(self, patient_id: _Optional[str] = ..., values: _Optional[_Iterable[_Union[FeatureValue, _Mapping]]] = ..., person_id: _Optional[str] = ...) -> None: ...

class OnlineResponse(_message.Message):
    __slots__ = ("timeline", "as_of", "features", "patients")
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PATIENTS_FIELD_NUMBER: _ClassVar[int]
    timeline: str
    as_of: str
    features: _containers.RepeatedScalarFieldContainer[str]
    patients: _containers.RepeatedCompositeFieldContainer[PatientFeatures]
    def __init__(self, timeline: _Optional[str] = ..., as_of: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., patients: _Optional[_Iterable[_Union[PatientFeatures, _Mapping]]] = ...) -> None: ...

class HistoricalRequest(_message.Message):
    __slots__ = ("feature_set", "entities_ipc", "entities_ref", "timeline", "as_occurred", "name")
    FEATURE_SET_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_IPC_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_REF_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    AS_OCCURRED_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    feature_set: str
    entities_ipc: bytes
    entities_ref: str
    timeline: str
    as_occurred: bool
    name: str
    def __init__(self, feature_set: _Optional[str] = ..., entities_ipc: _Optional[bytes] = ..., entities_ref: _Optional[str] = ..., timeline: _Optional[str] = ..., as_occurred: _Optional[bool] = ..., name: _Optional[str] = ...) -> None: ...

class HistoricalResponse(_message.Message):
    __slots__ = ("header", "batch_ipc")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BATCH_IPC_FIELD_NUMBER: _ClassVar[int]
    header: HistoricalHeader
    batch_ipc: bytes
    def __init__(self, header: _Optional[_Union[HistoricalHeader, _Mapping]] = ..., batch_ipc: _Optional[bytes] = ...) -> None: ...

class HistoricalHeader(_message.Message):
    __slots__ = ("training_set", "timeline", "entities", "rows", "schema_ipc", "consent", "consent_excluded_rows", "consent_excluded_patients")
    TRAINING_SET_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_IPC_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    CONSENT_EXCLUDED_ROWS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_EXCLUDED_PATIENTS_FIELD_NUMBER: _ClassVar[int]
    training_set: str
    timeline: str
    entities: str
    rows: int
    schema_ipc: bytes
    consent: str
    consent_excluded_rows: int
    consent_excluded_patients: int
    def __init__(self, training_set: _Optional[str] = ..., timeline: _Optional[str] = ..., entities: _Optional[str] = ..., rows: _Optional[int] = ..., schema_ipc: _Optional[bytes] = ..., consent: _Optional[str] = ..., consent_excluded_rows: _Optional[int] = ..., consent_excluded_patients: _Optional[int] = ...) -> None: ...

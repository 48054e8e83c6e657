from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DriftRequest(_message.Message):
    __slots__ = ("training", "online", "since", "feature_set")
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SET_FIELD_NUMBER: _ClassVar[int]
    training: str
    online: str
    since: str
    feature_set: str
    def __init__(self, training: _Optional[str] = ..., online: _Optional[str] = ..., since: _Optional[str] = ..., feature_set: _Optional[str] = ...) -> None: ...

class DriftBin(_message.Message):
    __slots__ = ("label", "training", "online")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    label: str
    training: int
    online: int
    def __init__(self, label: _Optional[str] = ..., training: _Optional[int] = ..., online: _Optional[int] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "kind", "psi", "level", "training_values", "online_values", "bins")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TRAINING_VALUES_FIELD_NUMBER: _ClassVar[int]
    ONLINE_VALUES_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    feature: str
    kind: str
    psi: float
    level: str
    training_values: int
    online_values: int
    bins: _containers.RepeatedCompositeFieldContainer[DriftBin]
    def __init__(self, feature: _Optional[str] = ..., kind: _Optional[str] = ..., psi: _Optional[float] = ..., level: _Optional[str] = ..., training_values: _Optional[int] = ..., online_values: _Optional[int] = ..., bins: _Optional[_Iterable[_Union[DriftBin, _Mapping]]] = ...) -> None: ...

class DriftResponse(_message.Message):
    __slots__ = ("training", "training_name", "online", "online_versions", "online_lookups", "online_values", "features", "not_served", "not_trained", "max_psi")
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    TRAINING_NAME_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    ONLINE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ONLINE_LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    ONLINE_VALUES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NOT_SERVED_FIELD_NUMBER: _ClassVar[int]
    NOT_TRAINED_FIELD_NUMBER: _ClassVar[int]
    MAX_PSI_FIELD_NUMBER: _ClassVar[int]
    training: str
    training_name: str
    online: str
    online_versions: int
    online_lookups: int
    online_values: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    not_served: _containers.RepeatedScalarFieldContainer[str]
    not_trained: _containers.RepeatedScalarFieldContainer[str]
    max_psi: float
    def __init__(self, training: _Optional[str] = ..., training_name: _Optional[str] = ..., online: _Optional[str] = ..., online_versions: _Optional[int] = ..., online_lookups: _Optional[int] = ..., online_values: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., not_served: _Optional[_Iterable[str]] = ..., not_trained: _Optional[_Iterable[str]] = ..., max_psi: _Optional[float] = ...) -> None: ...

class SkewRequest(_message.Message):
    __slots__ = ("online", "since")
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    online: str
    since: str
    def __init__(self, online: _Optional[str] = ..., since: _Optional[str] = ...) -> None: ...

class FeatureSkew(_message.Message):
    __slots__ = ("feature", "compared", "differing")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    DIFFERING_FIELD_NUMBER: _ClassVar[int]
    feature: str
    compared: int
    differing: int
    def __init__(self, feature: _Optional[str] = ..., compared: _Optional[int] = ..., differing: _Optional[int] = ...) -> None: ...

class SkewMismatch(_message.Message):
    __slots__ = ("seq", "patient_id", "as_of", "timeline", "feature", "logged", "replayed")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    LOGGED_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    seq: int
    patient_id: str
    as_of: str
    timeline: str
    feature: str
    logged: str
    replayed: str
    def __init__(self, seq: _Optional[int] = ..., patient_id: _Optional[str] = ..., as_of: _Optional[str] = ..., timeline: _Optional[str] = ..., feature: _Optional[str] = ..., logged: _Optional[str] = ..., replayed: _Optional[str] = ...) -> None: ...

class SkewResponse(_message.Message):
    __slots__ = ("online", "online_versions", "lookups", "values", "differing", "unreplayable", "ok", "timelines", "features", "examples", "notes")
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    ONLINE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    DIFFERING_FIELD_NUMBER: _ClassVar[int]
    UNREPLAYABLE_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    TIMELINES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    online: str
    online_versions: int
    lookups: int
    values: int
    differing: int
    unreplayable: int
    ok: bool
    timelines: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.RepeatedCompositeFieldContainer[FeatureSkew]
    examples: _containers.RepeatedCompositeFieldContainer[SkewMismatch]
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, online: _Optional[str] = ..., online_versions: _Optional[int] = ..., lookups: _Optional[int] = ..., values: _Optional[int] = ..., differing: _Optional[int] = ..., unreplayable: _Optional[int] = ..., ok: _Optional[bool] = ..., timelines: _Optional[_Iterable[str]] = ..., features: _Optional[_Iterable[_Union[FeatureSkew, _Mapping]]] = ..., examples: _Optional[_Iterable[_Union[SkewMismatch, _Mapping]]] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListDatasetsRequest(_message.Message):
    __slots__ = ("kind", "name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Manifest]
    def __init__(self, datasets: _Optional[_Iterable[_Union[Manifest, _Mapping]]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("hash", "name", "kind", "rows", "bytes", "created_at", "ward_version", "columns", "lineage", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HASH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    WARD_VERSION_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    hash: str
    name: str
    kind: str
    rows: int
    bytes: int
    created_at: str
    ward_version: str
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    lineage: Lineage
    labels: _containers.ScalarMap[str, str]
    def __init__(self, hash: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., rows: _Optional[int] = ..., bytes: _Optional[int] = ..., created_at: _Optional[str] = ..., ward_version: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "data_type", "nullable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    NULLABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    data_type: str
    nullable: bool
    def __init__(self, name: _Optional[str] = ..., data_type: _Optional[str] = ..., nullable: _Optional[bool] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("inputs", "definition", "params_json")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    definition: str
    params_json: str
    def __init__(self, inputs: _Optional[_Iterable[str]] = ..., definition: _Optional[str] = ..., params_json: _Optional[str] = ...) -> None: ...

class VerifyDatasetRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class VerifyDatasetResponse(_message.Message):
    __slots__ = ("hash", "ok", "rows", "files", "problem")
    HASH_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    hash: str
    ok: bool
    rows: int
    files: int
    problem: str
    def __init__(self, hash: _Optional[str] = ..., ok: _Optional[bool] = ..., rows: _Optional[int] = ..., files: _Optional[int] = ..., problem: _Optional[str] = ...) -> None: ...

class TagDatasetRequest(_message.Message):
    __slots__ = ("name", "ref", "override_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    ref: str
    override_reason: str
    def __init__(self, name: _Optional[str] = ..., ref: _Optional[str] = ..., override_reason: _Optional[str] = ...) -> None: ...

class TagDatasetResponse(_message.Message):
    __slots__ = ("name", "hash")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    name: str
    hash: str
    def __init__(self, name: _Optional[str] = ..., hash: _Optional[str] = ...) -> None: ...

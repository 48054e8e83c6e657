from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestOptions(_message.Message):
    __slots__ = ("format", "mapping_toml", "source_system", "max_bad", "zone")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MAPPING_TOML_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    MAX_BAD_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    format: str
    mapping_toml: str
    source_system: str
    max_bad: str
    zone: str
    def __init__(self, format: _Optional[str] = ..., mapping_toml: _Optional[str] = ..., source_system: _Optional[str] = ..., max_bad: _Optional[str] = ..., zone: _Optional[str] = ...) -> None: ...

class IngestPathsRequest(_message.Message):
    __slots__ = ("options", "paths")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    options: IngestOptions
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, options: _Optional[_Union[IngestOptions, _Mapping]] = ..., paths: _Optional[_Iterable[str]] = ...) -> None: ...

class IngestUploadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("options", "file_name")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    options: IngestOptions
    file_name: str
    def __init__(self, options: _Optional[_Union[IngestOptions, _Mapping]] = ..., file_name: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("raw_hash", "curated", "quarantine_hash", "records", "bad_records", "bad_by_reason", "skipped", "files", "bytes")
    class BadByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class SkippedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RAW_HASH_FIELD_NUMBER: _ClassVar[int]
    CURATED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_HASH_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    BAD_RECORDS_FIELD_NUMBER: _ClassVar[int]
    BAD_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    raw_hash: str
    curated: _containers.RepeatedCompositeFieldContainer[CuratedVersion]
    quarantine_hash: str
    records: int
    bad_records: int
    bad_by_reason: _containers.ScalarMap[str, int]
    skipped: _containers.ScalarMap[str, int]
    files: int
    bytes: int
    def __init__(self, raw_hash: _Optional[str] = ..., curated: _Optional[_Iterable[_Union[CuratedVersion, _Mapping]]] = ..., quarantine_hash: _Optional[str] = ..., records: _Optional[int] = ..., bad_records: _Optional[int] = ..., bad_by_reason: _Optional[_Mapping[str, int]] = ..., skipped: _Optional[_Mapping[str, int]] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class CuratedVersion(_message.Message):
    __slots__ = ("table", "hash", "rows", "parsed_rows")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PARSED_ROWS_FIELD_NUMBER: _ClassVar[int]
    table: str
    hash: str
    rows: int
    parsed_rows: int
    def __init__(self, table: _Optional[str] = ..., hash: _Optional[str] = ..., rows: _Optional[int] = ..., parsed_rows: _Optional[int] = ...) -> None: ...

"""The Ward client: gRPC calls and Arrow Flight, returning pandas and pyarrow objects."""

import dataclasses
import datetime as _dt
import io
import os
import pathlib

import grpc
import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight

from . import errors
from ._pb import datasets_pb2, datasets_pb2_grpc
from ._pb import features_pb2, features_pb2_grpc
from ._pb import ingest_pb2, ingest_pb2_grpc
from ._pb import models_pb2, models_pb2_grpc

__all__ = [
    "Client",
    "DatasetInfo",
    "ColumnInfo",
    "Verification",
    "FeatureSetInfo",
    "FeatureInfo",
    "Materialized",
    "IngestResult",
    "CuratedVersion",
    "ModelCard",
    "STATUS_SUFFIX",
]

#: Suffix of the per-feature status columns of `Client.get_online_features`.
STATUS_SUFFIX = "__status"

_STATUS_NAMES = {
    features_pb2.VALUE_STATUS_UNSPECIFIED: "unspecified",
    features_pb2.PRESENT: "present",
    features_pb2.NO_DATA: "no_data",
    features_pb2.OUTSIDE_TTL: "outside_ttl",
}

# Large enough for Arrow IPC batches of a training set; the server has its own limits.
_DEFAULT_MAX_MESSAGE = 256 * 1024 * 1024
_UPLOAD_CHUNK = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ColumnInfo:
    """One column of a dataset version."""

    name: str
    data_type: str
    nullable: bool


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A dataset version's manifest (what `ward show REF --json` prints)."""

    hash: str
    name: str
    kind: str
    rows: int
    bytes: int
    created_at: str
    ward_version: str
    columns: list
    inputs: list
    definition: str
    params_json: str
    labels: dict

    @classmethod
    def _from_pb(cls, m):
        return cls(
            hash=m.hash,
            name=m.name,
            kind=m.kind,
            rows=m.rows,
            bytes=m.bytes,
            created_at=m.created_at,
            ward_version=m.ward_version,
            columns=[ColumnInfo(c.name, c.data_type, c.nullable) for c in m.columns],
            inputs=list(m.lineage.inputs),
            definition=m.lineage.definition,
            params_json=m.lineage.params_json,
            labels=dict(m.labels),
        )


@dataclasses.dataclass(frozen=True)
class Verification:
    """The result of `Client.verify`; true in a boolean context when the version is intact."""

    hash: str
    ok: bool
    rows: int
    files: int
    problem: str

    def __bool__(self):
        return self.ok


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One feature of a feature set."""

    name: str
    kind: str
    is_label: bool
    ttl_seconds: int


@dataclasses.dataclass(frozen=True)
class FeatureSetInfo:
    """A feature set the server knows, and its latest timeline ("" if never materialized)."""

    name: str
    definition: str
    features: list
    timeline: str
    #: Declared for online use (a set with labels never is).
    online: bool
    #: The entity its rows are keyed by (`patient`).
    entity: str


@dataclasses.dataclass(frozen=True)
class Materialized:
    """The result of `Client.materialize`."""

    timeline: str
    definition: str
    change_points: int
    patients: int
    created: bool
    #: The timeline built on when materialized incrementally; "" when in full.
    previous: str = ""
    #: Why in full ("" when incremental).
    full_reason: str = ""
    #: Patients whose change points were copied from `previous`.
    reused: int = 0


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """A registered model card (docs/models.md): a version of kind `model` whose lineage
    input is the training set it was trained on."""

    #: The card's version, `b3:<64 hex>`.
    hash: str
    name: str
    #: The training set's hash.
    training: str
    #: Metric name -> value.
    metrics: dict
    description: str
    owner: str
    #: RFC 3339, UTC.
    created_at: str
    #: False when the same card had been registered before.
    created: bool = False

    @classmethod
    def _from_pb(cls, c):
        return cls(
            hash=c.hash,
            name=c.name,
            training=c.training,
            metrics=dict(sorted(c.metrics.items())),
            description=c.description,
            owner=c.owner,
            created_at=c.created_at,
            created=c.created,
        )


@dataclasses.dataclass(frozen=True)
class CuratedVersion:
    """A curated table's new version after an ingest."""

    #: The version (cumulative: the previous version's rows and this run's, deduplicated).
    hash: str
    #: Rows in the version.
    rows: int
    #: Rows this run contributed.
    parsed_rows: int


@dataclasses.dataclass(frozen=True)
class IngestResult:
    """The result of `Client.ingest`: the versions written and the quarantine counts."""

    raw_hash: str
    #: table name -> CuratedVersion
    curated: dict
    #: "" when no record was bad.
    quarantine_hash: str
    #: Curated rows parsed from the input.
    records: int
    bad_records: int
    bad_by_reason: dict
    skipped: dict
    files: int
    bytes: int

    @classmethod
    def _from_pb(cls, r):
        return cls(
            raw_hash=r.raw_hash,
            curated={c.table: CuratedVersion(c.hash, c.rows, c.parsed_rows) for c in r.curated},
            quarantine_hash=r.quarantine_hash,
            records=r.records,
            bad_records=r.bad_records,
            bad_by_reason=dict(r.bad_by_reason),
            skipped=dict(r.skipped),
            files=r.files,
            bytes=r.bytes,
        )


def _time_text(t):
    """RFC 3339 text for an as-of time: str as given, datetime/Timestamp (naive = UTC), date."""
    if t is None:
        return ""
    if isinstance(t, str):
        return t
    if isinstance(t, _dt.datetime):  # includes pandas.Timestamp
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        t = t.astimezone(_dt.timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(t, _dt.date):
        return f"{t.isoformat()}T00:00:00Z"
    raise TypeError(f"as_of must be None, str, datetime or date, not {type(t).__name__}")


def _strings(x, what):
    if isinstance(x, (str, bytes)):
        return [x.decode() if isinstance(x, bytes) else x]
    try:
        out = [str(v) for v in x]
    except TypeError:
        raise TypeError(f"{what} must be a string or an iterable of strings") from None
    return out


def _plain_string(t):
    return pa.types.is_large_string(t) or str(t) == "string_view"


def entities_table(entity_df):
    """The entity rows as an Arrow table ready to send.

    Accepts a pandas DataFrame or a pyarrow Table with columns `patient_id` (strings) and
    `timestamp` (datetimes; naive ones are read as UTC by the server); other columns are
    passed through. The index is dropped, large/view strings become plain utf8, timestamp
    zones become UTC (the instants do not change), and schema metadata is removed.
    """
    if isinstance(entity_df, pd.DataFrame):
        table = pa.Table.from_pandas(entity_df, preserve_index=False)
    elif isinstance(entity_df, pa.Table):
        table = entity_df
    elif isinstance(entity_df, pa.RecordBatch):
        table = pa.Table.from_batches([entity_df])
    else:
        raise TypeError(
            "entity_df must be a pandas DataFrame, a pyarrow Table or a version reference (str), "
            f"not {type(entity_df).__name__}"
        )
    for name in ("patient_id", "timestamp"):
        if name not in table.column_names:
            raise errors.InvalidArgument(
                f"entity rows need a `{name}` column; they have {table.column_names}"
            )
    fields = []
    for field in table.schema:
        t = field.type
        if _plain_string(t):
            t = pa.string()
        elif pa.types.is_timestamp(t) and t.tz is not None and t.tz != "UTC":
            t = pa.timestamp(t.unit, "UTC")
        fields.append(pa.field(field.name, t, field.nullable))
    if not (
        pa.types.is_string(fields[table.column_names.index("patient_id")].type)
        or pa.types.is_null(fields[table.column_names.index("patient_id")].type)
    ):
        raise errors.InvalidArgument(
            f"entity column `patient_id` must hold strings, not {table.schema.field('patient_id').type}"
        )
    ts = table.schema.field("timestamp").type
    if not pa.types.is_timestamp(ts):
        raise errors.InvalidArgument(
            f"entity column `timestamp` must hold datetimes, not {ts} "
            "(convert with pandas.to_datetime(..., utc=True))"
        )
    return table.cast(pa.schema(fields)).replace_schema_metadata(None)


def ipc_bytes(table):
    """An Arrow IPC stream (schema, then the table's batches) as bytes."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_historical_stream(responses):
    """Assembles a GetHistoricalFeatures response stream into (pyarrow.Table, header).

    The first message must be the header (hashes, row count, schema); every following one
    holds one record batch as a self-contained Arrow IPC stream. Raises WardError when the
    stream breaks this shape or its row count differs from the header's.
    """
    header = None
    tables = []
    for msg in responses:
        part = msg.WhichOneof("part")
        if part == "header":
            if header is not None:
                raise errors.WardError("historical stream: a second header")
            header = msg.header
        elif part == "batch_ipc":
            if header is None:
                raise errors.WardError("historical stream: a batch before the header")
            tables.append(pa.ipc.open_stream(msg.batch_ipc).read_all())
        else:
            raise errors.WardError("historical stream: an empty message")
    if header is None:
        raise errors.WardError("historical stream: it ended without a header")
    schema = _header_schema(header)
    if tables:
        table = pa.concat_tables(
            [t.replace_schema_metadata(schema.metadata) for t in tables]
        )
    elif schema is not None:
        table = schema.empty_table()
    else:
        raise errors.WardError("historical stream: no schema and no batches")
    if table.num_rows != header.rows:
        raise errors.WardError(
            f"historical stream: {table.num_rows} rows received, the header announced {header.rows}"
        )
    return table, header


def _header_schema(header):
    if not header.schema_ipc:
        return None
    buf = pa.py_buffer(header.schema_ipc)
    try:
        return pa.ipc.read_schema(buf)
    except (pa.ArrowInvalid, OSError):
        # Also accept a whole IPC stream holding only the schema.
        return pa.ipc.open_stream(buf).schema


def online_frame(resp, statuses=True):
    """The DataFrame of an OnlineResponse (see `Client.get_online_features`)."""
    names = list(resp.features)
    values = {f: [] for f in names}
    status = {f: [] for f in names}
    ids = []
    persons = []
    for p in resp.patients:
        if len(p.values) != len(names):
            raise errors.WardError(
                f"online response: patient {p.patient_id} has {len(p.values)} values "
                f"for {len(names)} features"
            )
        ids.append(p.patient_id)
        persons.append(p.person_id or None)
        for f, v in zip(names, p.values):
            which = v.WhichOneof("value")
            values[f].append(v.num if which == "num" else v.text if which == "text" else None)
            status[f].append(_STATUS_NAMES.get(v.status, "unspecified"))
    cols = {"patient_id": pd.Series(ids, dtype=object)}
    if any(persons):
        # A person-keyed set (docs/mpi.md): the person each requested id resolved to.
        cols["person_id"] = pd.Series(persons, dtype=object)
    for f in names:
        vs = values[f]
        if any(isinstance(v, str) for v in vs):
            cols[f] = pd.Series(vs, dtype=object)
        else:
            cols[f] = pd.Series([float("nan") if v is None else v for v in vs], dtype="float64")
    if statuses:
        for f in names:
            cols[f + STATUS_SUFFIX] = pd.Series(status[f], dtype=object)
    df = pd.DataFrame(cols)
    df.attrs["timeline"] = resp.timeline
    df.attrs["as_of"] = resp.as_of
    df.attrs["features"] = names
    return df


class Client:
    """A connection to a Ward server (`ward serve`).

    `addr` is `host:port` (gRPC and Arrow Flight are served on the same port unless
    `flight_addr` says otherwise). `token` is a bearer token (a JWT or an API token) sent as
    `authorization: Bearer <token>` on every call, gRPC and Flight. `tls` is the path of a
    PEM file of root certificates to trust (or True for the system's roots); without it the
    connection is plaintext, which is meant for loopback only. `timeout` is a deadline in
    seconds applied to every call (None: no deadline).

    Usable as a context manager; `close()` releases the connections.
    """

    def __init__(
        self,
        addr,
        *,
        token=None,
        tls=None,
        timeout=None,
        flight_addr=None,
        max_message_bytes=_DEFAULT_MAX_MESSAGE,
    ):
        self.addr = addr
        self.timeout = timeout
        self._token = token
        self._flight_addr = flight_addr or addr
        self._root_pem = None
        self._tls = bool(tls)
        if tls is not None and tls is not False and tls is not True:
            self._root_pem = pathlib.Path(tls).read_bytes()
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if self._tls:
            creds = grpc.ssl_channel_credentials(root_certificates=self._root_pem)
            self._channel = grpc.secure_channel(addr, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(addr, options=options)
        self._datasets = datasets_pb2_grpc.DatasetsStub(self._channel)
        self._features = features_pb2_grpc.FeaturesStub(self._channel)
        self._ingest = ingest_pb2_grpc.IngestStub(self._channel)
        self._models = models_pb2_grpc.ModelsStub(self._channel)
        self._flight = None

    # -- plumbing ------------------------------------------------------------------------

    def _metadata(self):
        return [("authorization", f"Bearer {self._token}")] if self._token else []

    def _call(self, method, request):
        try:
            return method(request, metadata=self._metadata(), timeout=self.timeout)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    def _flight_client(self):
        if self._flight is None:
            scheme = "grpc+tls" if self._tls else "grpc+tcp"
            kwargs = {}
            if self._root_pem is not None:
                kwargs["tls_root_certs"] = self._root_pem
            self._flight = flight.connect(f"{scheme}://{self._flight_addr}", **kwargs)
        return self._flight

    def _flight_options(self):
        headers = []
        if self._token:
            headers.append((b"authorization", f"Bearer {self._token}".encode()))
        return flight.FlightCallOptions(headers=headers, timeout=self.timeout)

    def close(self):
        """Closes the gRPC channel and the Flight connection."""
        if self._flight is not None:
            self._flight.close()
            self._flight = None
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- health --------------------------------------------------------------------------

    def health(self, service=""):
        """The server's grpc.health.v1 status: "SERVING", "NOT_SERVING", ...

        `service` is a fully qualified service name (e.g. "ward.v1.Features"), or "" for
        the server as a whole.
        """
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        resp = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    # -- datasets ------------------------------------------------------------------------

    def datasets(self, kind=None, name=None):
        """Dataset versions, newest first, as a list of DatasetInfo.

        `kind` is raw, curated, quarantine, timeline, training, model or other; `name` keeps the
        versions of one name.
        """
        req = datasets_pb2.ListDatasetsRequest(kind=kind or "", name=name or "")
        resp = self._call(self._datasets.ListDatasets, req)
        return [DatasetInfo._from_pb(m) for m in resp.datasets]

    def manifest(self, ref):
        """The manifest (DatasetInfo) of one version: a hash, prefix, name or name@time."""
        resp = self._call(self._datasets.GetDataset, datasets_pb2.GetDatasetRequest(ref=ref))
        return DatasetInfo._from_pb(resp)

    def verify(self, ref):
        """Recomputes a version's hash from storage on the server (a Verification)."""
        r = self._call(self._datasets.VerifyDataset, datasets_pb2.VerifyDatasetRequest(ref=ref))
        return Verification(r.hash, r.ok, r.rows, r.files, r.problem)

    def tag(self, name, ref, override_reason=""):
        """Points the tag `name` at a version; returns the hash it now names.

        Tagging `prod` a version whose data-quality expectations fail is refused
        (FAILED_PRECONDITION) unless `override_reason` says why; the reason is audited
        (docs/quality.md).
        """
        r = self._call(
            self._datasets.TagDataset,
            datasets_pb2.TagDatasetRequest(name=name, ref=ref, override_reason=override_reason),
        )
        return r.hash

    # -- model cards ---------------------------------------------------------------------

    def register_model(self, name, training, metrics=None, description="", owner=""):
        """Registers a model card: the model `name`, the training set it was trained on
        (`training`: a hash, a unique prefix or a name) and its `metrics` (a dict of names to
        numbers, e.g. {"auc": 0.81}); returns the ModelCard. Needs the `datasets_write`
        permission; audited. Registering the same card again returns the same version.
        """
        req = models_pb2.RegisterModelRequest(
            name=name,
            training=training,
            metrics={str(k): float(v) for k, v in (metrics or {}).items()},
            description=description or "",
            owner=owner or "",
        )
        return ModelCard._from_pb(self._call(self._models.RegisterModel, req))

    def models(self, name=None):
        """The registered model cards, newest first (a list of ModelCard); `name` keeps one
        model's."""
        resp = self._call(self._models.ListModels, models_pb2.ListModelsRequest(name=name or ""))
        return [ModelCard._from_pb(c) for c in resp.models]

    def dataset(self, ref):
        """A whole version as a pyarrow.Table, streamed over Arrow Flight (DoGet).

        The ticket is the reference as UTF-8: a hash, a unique prefix, a name or name@time.
        """
        client = self._flight_client()
        try:
            reader = client.do_get(flight.Ticket(ref.encode("utf-8")), options=self._flight_options())
            return reader.read_all()
        except (flight.FlightError, pa.ArrowException) as e:
            raise errors.from_flight_error(e) from None

    def upload_entities(self, entity_df, name="entities"):
        """Stores entity rows as a version over Arrow Flight (DoPut); returns its hash.

        The hash can be passed as `entity_df` to `get_historical_features` later, so the same
        rows are not sent again.
        """
        table = entities_table(entity_df)
        client = self._flight_client()
        try:
            descriptor = flight.FlightDescriptor.for_path(name)
            writer, meta = client.do_put(descriptor, table.schema, options=self._flight_options())
            writer.write_table(table)
            writer.done_writing()
            buf = meta.read()
            writer.close()
        except (flight.FlightError, pa.ArrowException) as e:
            raise errors.from_flight_error(e) from None
        if buf is None:
            raise errors.WardError("DoPut: the server sent no result")
        return buf.to_pybytes().decode("utf-8")

    # -- features ------------------------------------------------------------------------

    def feature_sets(self):
        """The feature sets the server knows, as a list of FeatureSetInfo."""
        resp = self._call(self._features.ListFeatureSets, features_pb2.ListFeatureSetsRequest())
        return [
            FeatureSetInfo(
                s.name,
                s.definition,
                [FeatureInfo(f.name, f.kind, f.is_label, f.ttl_seconds) for f in s.features],
                s.timeline,
                s.online,
                s.entity,
            )
            for s in resp.sets
        ]

    def materialize(self, feature_set, as_occurred=False, full=False):
        """Materializes a feature set from the latest curated versions (a Materialized).

        Incrementally from the set's newest timeline when it was made from the same
        definition and knowledge, unless `full=True`; the timeline is the same either way.
        The server swaps the new timeline into its online index.
        """
        req = features_pb2.MaterializeRequest(feature_set=feature_set, as_occurred=as_occurred, full=full)
        r = self._call(self._features.Materialize, req)
        return Materialized(
            r.timeline, r.definition, r.change_points, r.patients, r.created, r.previous, r.full_reason, r.reused
        )

    def get_online_features(self, feature_set, patient_ids, as_of=None, features=None, statuses=True):
        """Features of patients at one time, as a pandas DataFrame.

        One row per requested patient, in request order: a `patient_id` column (and, for a
        set materialized with `--entity person`, a `person_id` column: the person each id
        resolved to, None for an id no person holds), then one column per feature (float64 for numbers, object for text; NaN/None where the server
        sent no value), then, unless `statuses=False`, one `<feature>__status` column per
        feature holding "present", "no_data" or "outside_ttl". `df.attrs["timeline"]` is
        the hash of the timeline version that answered, `df.attrs["as_of"]` the time the
        values hold at, `df.attrs["features"]` the feature names.

        `as_of`: None (the server's now), RFC 3339 text, a datetime (naive = UTC) or a
        date (its midnight UTC). `features`: a subset, in the order wanted (default all).
        A set holding labels raises FailedPrecondition.
        """
        req = features_pb2.OnlineRequest(
            feature_set=feature_set,
            patient_ids=_strings(patient_ids, "patient_ids"),
            as_of=_time_text(as_of),
            features=_strings(features, "features") if features is not None else [],
        )
        return online_frame(self._call(self._features.GetOnlineFeatures, req), statuses)

    def historical_table(self, feature_set, entity_df, timeline=None, as_occurred=False, name=None):
        """Like get_historical_features, but returns (pyarrow.Table, header message)."""
        req = features_pb2.HistoricalRequest(
            feature_set=feature_set,
            timeline=timeline or "",
            as_occurred=as_occurred,
            name=name or "",
        )
        if isinstance(entity_df, str):
            req.entities_ref = entity_df
        else:
            req.entities_ipc = ipc_bytes(entities_table(entity_df))
        try:
            stream = self._features.GetHistoricalFeatures(
                req, metadata=self._metadata(), timeout=self.timeout
            )
            return read_historical_stream(stream)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    def get_historical_features(self, feature_set, entity_df, timeline=None, as_occurred=False, name=None):
        """A point-in-time correct training set: returns (DataFrame, training_set_hash).

        `entity_df`: a pandas DataFrame or pyarrow Table with `patient_id` and `timestamp`
        columns (other columns pass through), or the reference of stored entity rows. One
        output row per entity row, in input order. Each feature is read "as known at" the
        row's timestamp unless `as_occurred=True`. `timeline` pins a timeline version
        (default: the set's latest); `name` names the training set version (default
        `training-<set>`). `df.attrs` holds `training_set`, `timeline`, `entities` (hashes)
        and `rows`. The same inputs give the same hash: record it with the model.
        """
        table, header = self.historical_table(feature_set, entity_df, timeline, as_occurred, name)
        df = table.to_pandas()
        df.attrs["training_set"] = header.training_set
        df.attrs["timeline"] = header.timeline
        df.attrs["entities"] = header.entities
        df.attrs["rows"] = header.rows
        return df, header.training_set

    # -- ingest --------------------------------------------------------------------------

    def ingest(self, source, format, mapping=None, *, zone=None, max_bad=None, file_name=None):
        """Ingests clinical sources into curated versions (an IngestResult).

        `source` is either paths on the SERVER's machine (a str/Path or a list of them;
        files or directories), or a binary file object opened by the caller, which is
        uploaded (its name, or `file_name`, tells the server the extension, e.g. `.gz`).
        `format`: csv, parquet, synthea, fhir, fhir-ndjson or hl7v2. `mapping`: TOML text,
        or a path (Path, or a str naming an existing file) to a TOML mapping read here.
        `max_bad`: bad records tolerated (`100`, `"0.05"`, `"5%"`); default: all are
        quarantined. `zone`: the zone of source times without an offset (`"UTC"`, the
        default, or `"-05:00"`). The source system recorded on each row is the input file's
        name (an upload: `file_name`).
        """
        options = ingest_pb2.IngestOptions(
            format=format,
            mapping_toml=_mapping_text(mapping),
            zone=zone or "",
            max_bad="" if max_bad is None else str(max_bad),
        )
        if hasattr(source, "read"):
            name = file_name or os.path.basename(getattr(source, "name", "") or "upload")
            return IngestResult._from_pb(self._upload(source, options, name))
        if isinstance(source, (str, os.PathLike)):
            paths = [os.fspath(source)]
        else:
            paths = [os.fspath(p) for p in source]
        if not paths:
            raise errors.InvalidArgument("ingest: no paths given")
        req = ingest_pb2.IngestPathsRequest(options=options, paths=paths)
        return IngestResult._from_pb(self._call(self._ingest.IngestPaths, req))

    def _upload(self, fileobj, options, name):
        def parts():
            yield ingest_pb2.IngestUploadRequest(
                header=ingest_pb2.UploadHeader(options=options, file_name=name)
            )
            while True:
                chunk = fileobj.read(_UPLOAD_CHUNK)
                if not chunk:
                    break
                if isinstance(chunk, str):
                    raise TypeError("ingest: open the file in binary mode ('rb')")
                yield ingest_pb2.IngestUploadRequest(chunk=chunk)

        return self._call(self._ingest.IngestUpload, parts())


def _mapping_text(mapping):
    if mapping is None:
        return ""
    if isinstance(mapping, os.PathLike):
        return pathlib.Path(mapping).read_text(encoding="utf-8")
    if isinstance(mapping, str) and "\n" not in mapping and os.path.isfile(mapping):
        return pathlib.Path(mapping).read_text(encoding="utf-8")
    if isinstance(mapping, str):
        return mapping
    if isinstance(mapping, io.IOBase):
        return mapping.read()
    raise TypeError("mapping must be TOML text, a path, or None")

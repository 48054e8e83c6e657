"""Client pieces that need no Ward server: Arrow IPC assembly, DataFrame shapes, argument
checks, and the status-code mapping and credentials, against small in-process fake servers.
"""

import concurrent.futures as cf
import datetime as dt
import socket

import grpc
import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight
import pytest

import ward_client
from ward_client import client as wc
from ward_client._pb import features_pb2, features_pb2_grpc

CODES = [
    (grpc.StatusCode.NOT_FOUND, ward_client.NotFound),
    (grpc.StatusCode.INVALID_ARGUMENT, ward_client.InvalidArgument),
    (grpc.StatusCode.FAILED_PRECONDITION, ward_client.FailedPrecondition),
    (grpc.StatusCode.PERMISSION_DENIED, ward_client.PermissionDenied),
    (grpc.StatusCode.UNAUTHENTICATED, ward_client.Unauthenticated),
    (grpc.StatusCode.DATA_LOSS, ward_client.DataLoss),
    (grpc.StatusCode.UNIMPLEMENTED, ward_client.Unimplemented),
    (grpc.StatusCode.INTERNAL, ward_client.WardError),
]


def training_table(rows=10):
    ts = pa.array([i * 86_400_000_000 for i in range(rows)], pa.timestamp("us", "UTC"))
    return pa.table(
        {
            "patient_id": pa.array([f"P{i:07d}" for i in range(rows)]),
            "timestamp": ts,
            "age": pa.array([float(40 + i) if i % 3 else None for i in range(rows)]),
            "sex": pa.array(["female" if i % 2 else "male" for i in range(rows)]),
        }
    )


def historical_messages(table, batch_rows=4, rows=None, schema_as_stream=False):
    if schema_as_stream:
        schema_ipc = wc.ipc_bytes(table.schema.empty_table())
    else:
        schema_ipc = table.schema.serialize().to_pybytes()
    header = features_pb2.HistoricalHeader(
        training_set="b3:" + "a" * 64,
        timeline="b3:" + "b" * 64,
        entities="b3:" + "c" * 64,
        rows=table.num_rows if rows is None else rows,
        schema_ipc=schema_ipc,
    )
    msgs = [features_pb2.HistoricalResponse(header=header)]
    for batch in table.to_batches(max_chunksize=batch_rows):
        msgs.append(
            features_pb2.HistoricalResponse(batch_ipc=wc.ipc_bytes(pa.Table.from_batches([batch])))
        )
    return msgs


# -- Arrow IPC ----------------------------------------------------------------------------


def test_historical_stream_reassembles_batches():
    table = training_table(10)
    got, header = wc.read_historical_stream(historical_messages(table, batch_rows=3))
    assert got.equals(table)
    assert header.training_set == "b3:" + "a" * 64
    df = got.to_pandas()
    assert list(df.columns) == ["patient_id", "timestamp", "age", "sex"]
    assert df["patient_id"].tolist() == [f"P{i:07d}" for i in range(10)]
    assert str(df["timestamp"].dt.tz) == "UTC"
    assert pd.isna(df["age"][0]) and df["age"][1] == 41.0


def test_historical_stream_without_batches_keeps_the_schema():
    table = training_table(0)
    for as_stream in (False, True):
        got, _ = wc.read_historical_stream(historical_messages(table, schema_as_stream=as_stream))
        assert got.num_rows == 0
        assert got.schema.equals(table.schema)


def test_historical_stream_shape_errors():
    table = training_table(5)
    msgs = historical_messages(table)
    with pytest.raises(ward_client.WardError, match="5 rows received, the header announced 6"):
        wc.read_historical_stream(historical_messages(table, rows=6))
    with pytest.raises(ward_client.WardError, match="batch before the header"):
        wc.read_historical_stream(msgs[1:])
    with pytest.raises(ward_client.WardError, match="second header"):
        wc.read_historical_stream([msgs[0], msgs[0]])
    with pytest.raises(ward_client.WardError, match="without a header"):
        wc.read_historical_stream([])


def test_entities_table_normalizes_types():
    df = pd.DataFrame(
        {
            "patient_id": pd.Series(["P1", "P2", "P1"], dtype="string[pyarrow]"),
            "timestamp": pd.to_datetime(
                ["2020-01-01T05:00:00-05:00", "2020-02-01T00:00:00Z", "2020-01-01T10:00:00Z"],
                utc=True,
            ).tz_convert("America/New_York"),
            "encounter_id": ["E1", "E2", "E3"],
        },
        index=[10, 20, 30],
    )
    t = wc.entities_table(df)
    assert t.column_names == ["patient_id", "timestamp", "encounter_id"]
    assert t.schema.field("patient_id").type == pa.string()
    assert t.schema.field("timestamp").type.tz == "UTC"
    assert t.schema.metadata is None
    # Same instants: 05:00-05:00 is 10:00Z.
    assert t.column("timestamp")[0].as_py() == dt.datetime(2020, 1, 1, 10, tzinfo=dt.timezone.utc)
    back = pa.ipc.open_stream(wc.ipc_bytes(t)).read_all()
    assert back.equals(t)


def test_entities_table_rejects_bad_columns():
    with pytest.raises(ward_client.InvalidArgument, match="`timestamp` column") as e:
        wc.entities_table(pd.DataFrame({"patient_id": ["P1"]}))
    assert e.value.code is None
    with pytest.raises(ward_client.InvalidArgument, match="must hold datetimes"):
        wc.entities_table(pd.DataFrame({"patient_id": ["P1"], "timestamp": ["2020-01-01"]}))
    with pytest.raises(ward_client.InvalidArgument, match="must hold strings"):
        wc.entities_table(
            pd.DataFrame({"patient_id": [1], "timestamp": pd.to_datetime(["2020-01-01"], utc=True)})
        )
    with pytest.raises(TypeError):
        wc.entities_table([("P1", "2020-01-01")])


def online_response():
    r = features_pb2.OnlineResponse(
        timeline="b3:" + "d" * 64, as_of="2024-06-01T00:00:00+00:00", features=["age", "sex", "count"]
    )
    p = r.patients.add(patient_id="P0000001")
    p.values.add(num=71.0, status=features_pb2.PRESENT)
    p.values.add(text="female", status=features_pb2.PRESENT)
    p.values.add(num=2.0, status=features_pb2.PRESENT)
    q = r.patients.add(patient_id="P9999999")
    q.values.add(status=features_pb2.NO_DATA)
    q.values.add(status=features_pb2.NO_DATA)
    q.values.add(status=features_pb2.OUTSIDE_TTL)
    return r


def test_online_frame_columns_values_and_statuses():
    df = wc.online_frame(online_response())
    assert list(df.columns) == [
        "patient_id", "age", "sex", "count", "age__status", "sex__status", "count__status",
    ]
    assert df["patient_id"].tolist() == ["P0000001", "P9999999"]
    assert df["age"].dtype == "float64" and df["age"][0] == 71.0 and pd.isna(df["age"][1])
    assert df["sex"].tolist() == ["female", None]
    assert df["count__status"].tolist() == ["present", "outside_ttl"]
    assert df.attrs["timeline"] == "b3:" + "d" * 64
    assert df.attrs["features"] == ["age", "sex", "count"]
    plain = wc.online_frame(online_response(), statuses=False)
    assert list(plain.columns) == ["patient_id", "age", "sex", "count"]


def test_online_frame_names_the_person_of_a_person_keyed_set():
    r = online_response()
    r.patients[0].person_id = "A1234567"
    df = wc.online_frame(r, statuses=False)
    assert list(df.columns) == ["patient_id", "person_id", "age", "sex", "count"]
    assert df["person_id"].tolist() == ["A1234567", None]
    # A patient-keyed answer names no person: no column.
    assert "person_id" not in wc.online_frame(online_response()).columns


def test_online_frame_rejects_ragged_rows():
    r = online_response()
    r.patients[1].values.pop()
    with pytest.raises(ward_client.WardError, match="P9999999 has 2 values for 3 features"):
        wc.online_frame(r)


def test_time_text():
    assert wc._time_text(None) == ""
    assert wc._time_text("2024-06-01") == "2024-06-01"
    assert wc._time_text(dt.date(2024, 6, 1)) == "2024-06-01T00:00:00Z"
    assert wc._time_text(dt.datetime(2024, 6, 1, 12)) == "2024-06-01T12:00:00.000000Z"
    tz = dt.timezone(dt.timedelta(hours=2))
    assert wc._time_text(dt.datetime(2024, 6, 1, 12, tzinfo=tz)) == "2024-06-01T10:00:00.000000Z"
    assert wc._time_text(pd.Timestamp("2024-06-01T12:00:00Z")) == "2024-06-01T12:00:00.000000Z"
    with pytest.raises(TypeError):
        wc._time_text(1717200000)


# -- a fake gRPC server: status codes and credentials ------------------------------------


class FakeFeatures(features_pb2_grpc.FeaturesServicer):
    def __init__(self):
        self.code = None
        self.metadata = None
        self.requests = []

    def GetOnlineFeatures(self, request, context):
        self.metadata = dict(context.invocation_metadata())
        self.requests.append(request)
        if self.code is not None:
            context.abort(self.code, f"feature set {request.feature_set!r}: refused ({self.code.name})")
        return online_response()

    def GetHistoricalFeatures(self, request, context):
        self.metadata = dict(context.invocation_metadata())
        self.requests.append(request)
        if self.code is not None:
            context.abort(self.code, "entity row 3: `timestamp` is null")
        table = pa.ipc.open_stream(request.entities_ipc).read_all() if request.entities_ipc else training_table(3)
        yield from historical_messages(table, batch_rows=2)


@pytest.fixture()
def fake():
    servicer = FakeFeatures()
    server = grpc.server(cf.ThreadPoolExecutor(max_workers=2))
    features_pb2_grpc.add_FeaturesServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


@pytest.mark.parametrize("code,exc", CODES)
def test_status_codes_map_to_exceptions(fake, code, exc):
    servicer, addr = fake
    servicer.code = code
    with ward_client.Client(addr, timeout=10) as c:
        with pytest.raises(exc) as e:
            c.get_online_features("readmission", ["P1"])
        assert e.value.code == code.name
        assert e.value.message == f"feature set 'readmission': refused ({code.name})"
        with pytest.raises(exc) as e:
            c.get_historical_features("readmission", "b3:" + "e" * 64)
        assert e.value.message == "entity row 3: `timestamp` is null"
    # Exact classes: a more specific error is never reported as another one.
    assert type(e.value) is exc


def test_bearer_token_is_sent_only_when_given(fake):
    servicer, addr = fake
    with ward_client.Client(addr, token="tok-123") as c:
        df = c.get_online_features("readmission_online", "P0000001", as_of=dt.date(2024, 6, 1))
        assert servicer.metadata.get("authorization") == "Bearer tok-123"
        assert servicer.requests[-1].patient_ids == ["P0000001"]
        assert servicer.requests[-1].as_of == "2024-06-01T00:00:00Z"
        assert df.attrs["timeline"] == "b3:" + "d" * 64
    with ward_client.Client(addr) as c:
        c.get_online_features("readmission_online", ["P0000001"])
        assert "authorization" not in servicer.metadata


def test_historical_sends_entities_as_ipc_and_returns_the_hash(fake):
    servicer, addr = fake
    entities = pd.DataFrame(
        {
            "patient_id": ["P2", "P1", "P2"],
            "timestamp": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-01"], utc=True),
        }
    )
    with ward_client.Client(addr) as c:
        df, h = c.get_historical_features("readmission", entities, timeline="b3:abcdef12", as_occurred=True)
    req = servicer.requests[-1]
    assert req.WhichOneof("entities") == "entities_ipc"
    assert req.timeline == "b3:abcdef12" and req.as_occurred and req.feature_set == "readmission"
    sent = pa.ipc.open_stream(req.entities_ipc).read_all()
    assert sent.column("patient_id").to_pylist() == ["P2", "P1", "P2"]
    assert h == "b3:" + "a" * 64 == df.attrs["training_set"]
    # The fake echoes the entity rows back: the frame is them, in order.
    assert df["patient_id"].tolist() == ["P2", "P1", "P2"]
    with ward_client.Client(addr) as c:
        c.get_historical_features("readmission", "entities-2024")
    assert servicer.requests[-1].entities_ref == "entities-2024"


def test_unreachable_server_is_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ward_client.Client(f"127.0.0.1:{port}", timeout=5) as c:
        with pytest.raises(ward_client.Unavailable):
            c.datasets()


# -- Arrow Flight: a pyarrow server and a raw gRPC one -----------------------------------


class FakeFlight(flight.FlightServerBase):
    def __init__(self):
        super().__init__("grpc+tcp://127.0.0.1:0")
        self.put = None

    def do_get(self, context, ticket):
        if ticket.ticket == b"missing":
            raise flight.FlightServerError("no version named 'missing'")
        return flight.RecordBatchStream(training_table(7))

    def do_put(self, context, descriptor, reader, writer):
        self.put = (descriptor.path, reader.read_all())
        writer.write(pa.py_buffer(b"b3:" + b"f" * 64))


def test_flight_dataset_and_entity_upload():
    server = FakeFlight()
    try:
        with ward_client.Client(f"127.0.0.1:{server.port}", timeout=10) as c:
            t = c.dataset("b3:" + "1" * 64)
            assert t.equals(training_table(7))
            entities = pd.DataFrame(
                {"patient_id": ["P1"], "timestamp": pd.to_datetime(["2020-01-01"], utc=True)}
            )
            h = c.upload_entities(entities, name="my-entities")
            assert h == "b3:" + "f" * 64
            path, table = server.put
            assert path == [b"my-entities"]
            assert table.column("patient_id").to_pylist() == ["P1"]
    finally:
        server.shutdown()


@pytest.fixture()
def raw_flight():
    """A gRPC server answering Flight DoGet with a chosen status (and recording metadata)."""
    state = {"code": grpc.StatusCode.NOT_FOUND, "metadata": None}

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            if details.method != "/arrow.flight.protocol.FlightService/DoGet":
                return None

            def do_get(request, context):
                state["metadata"] = dict(context.invocation_metadata())
                context.abort(state["code"], "unknown version b3:0000000000 (no such hash)")

            return grpc.unary_stream_rpc_method_handler(do_get)

    server = grpc.server(cf.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([Handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield state, f"127.0.0.1:{port}"
    server.stop(None)


@pytest.mark.parametrize("code,exc", CODES)
def test_flight_status_codes_map_to_exceptions(raw_flight, code, exc):
    state, addr = raw_flight
    state["code"] = code
    with ward_client.Client(addr, token="tok-9", timeout=10) as c:
        with pytest.raises(exc) as e:
            c.dataset("b3:0000000000")
    assert type(e.value) is exc
    assert e.value.code == code.name
    assert e.value.message == "unknown version b3:0000000000 (no such hash)"
    assert state["metadata"]["authorization"] == "Bearer tok-9"


# -- TLS: a root certificate path -------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for localhost / 127.0.0.1 (made with the openssl tool)."""
    import os
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        msg = "the openssl command is needed to make a test certificate"
        if os.environ.get("WARD_REQUIRE_PYTHON") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


def test_tls_with_a_root_certificate(certificate):
    cert, key = certificate
    servicer = FakeFeatures()
    server = grpc.server(cf.ThreadPoolExecutor(max_workers=2))
    features_pb2_grpc.add_FeaturesServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        with ward_client.Client(f"localhost:{port}", tls=str(cert), token="tls-tok", timeout=10) as c:
            df = c.get_online_features("readmission_online", ["P0000001"])
            assert df.attrs["timeline"] == "b3:" + "d" * 64
            assert servicer.metadata["authorization"] == "Bearer tls-tok"
        # A plaintext client cannot talk to a TLS server.
        with ward_client.Client(f"localhost:{port}", timeout=5) as c:
            with pytest.raises(ward_client.Unavailable):
                c.get_online_features("readmission_online", ["P0000001"])
    finally:
        server.stop(None)


def test_flight_over_tls(certificate):
    cert, key = certificate

    class TlsFlight(FakeFlight):
        def __init__(self):
            flight.FlightServerBase.__init__(
                self, "grpc+tls://localhost:0",
                tls_certificates=[flight.CertKeyPair(cert.read_bytes(), key.read_bytes())],
            )
            self.put = None

    server = TlsFlight()
    try:
        with ward_client.Client(f"localhost:{server.port}", tls=cert, timeout=10) as c:
            assert c.dataset("b3:" + "1" * 64).equals(training_table(7))
    finally:
        server.shutdown()

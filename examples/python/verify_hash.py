#!/usr/bin/env python3
"""Recompute a Ward content hash from a Parquet export, independently of Ward.

Implements docs/hashing.md with pyarrow and the `blake3` package:

    ward export b3:... out.parquet
    python verify_hash.py out.parquet --expect b3:...        # exit 1 on mismatch
    python verify_hash.py out.parquet --manifest m.json      # cast to the manifest's types
    python verify_hash.py out.parquet --bucket-key patient_id --buckets 1024   # encoding 3
    (with --manifest, a bucketed version's manifest gives the key and bucket count itself)

A version on a running server (`ward serve`), for example the training set a model was
trained on, is read over Arrow Flight with the Python client (`pip install ./python`) and
cast to the types of its manifest; the hash must be the one it is stored under:

    python verify_hash.py --ref b3:...  [--addr 127.0.0.1:50051] [--token T]
    python verify_hash.py --card model_card.json            # the card's training set

Prints the hash. Written for clarity, not speed.
"""

import argparse
import json
import math
import struct
import sys

import blake3
import pyarrow as pa
import pyarrow.parquet as pq

MAGIC = b"ward-content-hash-v2\n"
MAGIC_BUCKETED = b"ward-content-hash-v3\n"
NULL_ITEM = 2**64 - 1


def u64(x):
    return struct.pack("<Q", x)


def varint(x):
    """Unsigned LEB128, shortest form (docs/hashing.md)."""
    out = bytearray()
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80)
        x >>= 7
    out.append(x)
    return bytes(out)


def sized(b):
    return u64(len(b)) + b


def descriptor(t):
    """The canonical type descriptor (docs/hashing.md, "Types")."""
    if pa.types.is_boolean(t):
        return "bool"
    for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        if t == getattr(pa, name)():
            return name
    if t == pa.float32():
        return "float32"
    if t == pa.float64():
        return "float64"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view":
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or str(t) == "binary_view":
        return "binary"
    if t == pa.date32():
        return "date32"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit},{t.tz or ''}]"
    if pa.types.is_decimal(t) and t.bit_width == 128:
        return f"decimal128({t.precision},{t.scale})"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if descriptor(t.value_type) == "string":
            return "list<string>"
    raise ValueError(f"type {t} is not supported by the content hash")


def arrow_type(desc):
    """The pyarrow type of a descriptor (used to cast back to the manifest's types)."""
    simple = {
        "bool": pa.bool_(), "float32": pa.float32(), "float64": pa.float64(),
        "string": pa.string(), "binary": pa.large_binary(), "date32": pa.date32(), "list<string>": pa.list_(pa.string()),
    }
    if desc in simple:
        return simple[desc]
    if desc.startswith("int") or desc.startswith("uint"):
        return getattr(pa, desc)()
    if desc.startswith("timestamp["):
        unit, tz = desc[len("timestamp["):-1].split(",", 1)
        return pa.timestamp(unit, tz or None)
    if desc.startswith("decimal128("):
        p, s = desc[len("decimal128("):-1].split(",")
        return pa.decimal128(int(p), int(s))
    raise ValueError(f"unknown descriptor {desc}")


FIXED = {
    "int8": "<b", "int16": "<h", "int32": "<i", "int64": "<q",
    "uint8": "<B", "uint16": "<H", "uint32": "<I", "uint64": "<Q", "date32": "<i",
}


def float_bytes(v, width):
    if math.isnan(v):
        return struct.pack("<I", 0x7FC00000) if width == 4 else struct.pack("<Q", 0x7FF8000000000000)
    if v == 0.0:
        v = 0.0  # -0.0 becomes +0.0
    return struct.pack("<f" if width == 4 else "<d", v)


def column_streams(col, desc):
    """The null, length and data streams of one column (a ChunkedArray)."""
    nulls, lengths, data = blake3.blake3(), blake3.blake3(), blake3.blake3()
    row = 0
    for chunk in col.chunks:
        if desc.startswith("timestamp"):
            chunk = chunk.cast(pa.int64())
        elif desc == "date32":
            chunk = chunk.cast(pa.int32())
        values = chunk.to_pylist()
        if desc.startswith("decimal"):
            scale = chunk.type.scale
            values = [None if x is None else int(x.scaleb(scale)) for x in values]
        for i, v in enumerate(values):
            if v is None:
                nulls.update(u64(row + i))
            elif desc == "bool":
                data.update(b"\x01" if v else b"\x00")
            elif desc in FIXED:
                data.update(struct.pack(FIXED[desc], v))
            elif desc.startswith("timestamp"):
                data.update(struct.pack("<q", v))
            elif desc.startswith("decimal"):
                data.update(v.to_bytes(16, "little", signed=True))
            elif desc == "float32":
                data.update(float_bytes(v, 4))
            elif desc == "float64":
                data.update(float_bytes(v, 8))
            elif desc == "string":
                b = v.encode("utf-8")
                lengths.update(varint(len(b)))
                data.update(b)
            elif desc == "binary":
                lengths.update(varint(len(v)))
                data.update(v)
            elif desc == "list<string>":
                lengths.update(varint(len(v)))
                for item in v:
                    if item is None:
                        lengths.update(varint(NULL_ITEM))
                    else:
                        b = item.encode("utf-8")
                        lengths.update(varint(len(b)))
                        data.update(b)
            else:
                raise ValueError(desc)
        row += len(values)
    return nulls.digest(), lengths.digest(), data.digest()


def content_hash(table):
    header = bytearray(MAGIC)
    header += u64(table.num_columns)
    descs = []
    for field in table.schema:
        d = descriptor(field.type)
        descs.append(d)
        header += sized(field.name.encode("utf-8")) + sized(d.encode("ascii"))
    h = blake3.blake3(bytes(header))
    h.update(u64(table.num_rows))
    for col, d in zip(table.columns, descs):
        for digest in column_streams(col, d):
            h.update(digest)
    return "b3:" + h.hexdigest()


def bucket_of(key, buckets):
    """The bucket of a key (bytes, or None for a null key): BLAKE3's first 8 bytes, mod B."""
    if key is None:
        return 0
    return struct.unpack("<Q", blake3.blake3(key).digest()[:8])[0] % buckets


def bucketed_hash(table, key, buckets):
    """Encoding 3: rows split into buckets by `key`, each bucket hashed as a table of its own
    (in table order), the bucket row counts and hashes combined in bucket order."""
    keys = table.column(key).to_pylist()
    rows = [[] for _ in range(buckets)]
    for i, k in enumerate(keys):
        if isinstance(k, str):
            k = k.encode("utf-8")
        rows[bucket_of(k, buckets)].append(i)
    header = bytearray(MAGIC_BUCKETED)
    header += u64(table.num_columns)
    for field in table.schema:
        header += sized(field.name.encode("utf-8")) + sized(descriptor(field.type).encode("ascii"))
    header += sized(key.encode("utf-8")) + u64(buckets) + u64(table.num_rows)
    h = blake3.blake3(bytes(header))
    for picked in rows:
        part = table.take(pa.array(picked, type=pa.uint32()))
        h.update(u64(part.num_rows))
        h.update(bytes.fromhex(content_hash(part)[3:]))
    return "b3:" + h.hexdigest()


def cast_to(table, columns):
    """Casts a table to the manifest's canonical types (a list of (name, descriptor))."""
    names = [name for name, _ in columns]
    if table.column_names != names:
        raise ValueError(f"columns {table.column_names} differ from the manifest's {names}")
    return table.cast(pa.schema([pa.field(n, arrow_type(d)) for n, d in columns]))


def from_server(ref, addr, token=None, tls=None):
    """(table, stored hash): a version read over Arrow Flight, cast to its manifest's types."""
    from ward_client import Client  # only this mode needs the client

    with Client(addr, token=token, tls=tls) as ward:
        manifest = ward.manifest(ref)
        table = ward.dataset(manifest.hash)
    return cast_to(table, [(c.name, c.data_type) for c in manifest.columns]), manifest.hash


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parquet", nargs="?", help="a Parquet export (`ward export REF OUT.parquet`)")
    ap.add_argument("--expect", help="the hash Ward reported; exit 1 if it differs")
    ap.add_argument("--manifest", help="`ward show REF --json` output: cast columns to its types")
    ap.add_argument("--ref", help="instead of a file: a version on a Ward server (e.g. a training set hash)")
    ap.add_argument("--card", help="instead of a file: the training set of a model card (train_readmission.py)")
    ap.add_argument("--addr", default="127.0.0.1:50051", help="the server, with --ref or --card")
    ap.add_argument("--token", help="bearer token for the server")
    ap.add_argument("--tls", help="root certificate (PEM) of the server")
    ap.add_argument("--bucket-key", help="encoding 3: the column rows are bucketed by")
    ap.add_argument("--buckets", type=int, default=1024, help="encoding 3: the bucket count")
    args = ap.parse_args()
    sources = [x for x in (args.parquet, args.ref, args.card) if x]
    if len(sources) != 1:
        ap.error("give exactly one of: a Parquet file, --ref, --card")
    if args.parquet:
        table = pq.read_table(args.parquet)
        if args.manifest:
            with open(args.manifest) as f:
                manifest = json.load(f)
            table = cast_to(table, [(c["name"], c["type"]) for c in manifest["schema"]])
            # A bucketed version (curated tables) names its key and bucket count.
            bucketing = manifest.get("bucketing")
            if bucketing and not args.bucket_key:
                args.bucket_key = bucketing["key"]
                args.buckets = int(bucketing["buckets"])
        expect = args.expect
    else:
        ref = args.ref
        if args.card:
            with open(args.card) as f:
                ref = json.load(f)["training_set"]
        table, stored = from_server(ref, args.addr, args.token, args.tls)
        if args.expect and args.expect != stored:
            print(f"MISMATCH: {ref} is stored as {stored}, expected {args.expect}", file=sys.stderr)
            return 1
        expect = stored
    if args.bucket_key:
        got = bucketed_hash(table, args.bucket_key, args.buckets)
    else:
        got = content_hash(table)
    print(got)
    if expect and got != expect:
        print(f"MISMATCH: expected {expect}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

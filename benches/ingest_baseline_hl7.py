#!/usr/bin/env python3
"""The plain script a user would write instead of Ward for HL7 v2-to-table work.

Reads HL7 v2 files (ADT A01-A13 and ORU^R01 messages; segments end in CR or LF), splits
messages on MSH, segments on CR, fields on `|` and components on `^`, and pulls the fields
Ward curates: a patient row per PID, an encounter row per PV1 (admit and discharge times,
class, the visit number as its id), an observation row per OBX (code, value, unit, time) and
a condition row per DG1, each with the message's control id and time. Builds pyarrow tables
with UTC timestamps and writes one Parquet file per table.

    python3 benches/ingest_baseline_hl7.py HL7_DIR OUT_DIR

Prints `rows N` (table rows written) and `versions ...`. `cargo bench --bench ingest` runs it
on the same files as Ward and reports the ratio. It replays nothing (an A08 or A03 adds a row
rather than updating the visit an A01 opened) and has no error handling beyond skipping what
is missing: it does less than Ward, so the ratio flatters the script.
"""

import glob
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

# The FHIR script's table builder (text, number and UTC timestamp columns), as one script
# would share it with the other.
from ingest_baseline import Table

CLASSES = {"I": "inpatient", "E": "emergency", "O": "ambulatory", "P": "preadmit", "R": "recurring"}


def hl7_ts(v):
    """HL7 DTM (YYYY[MM[DD[HH[MM[SS]]]]][+-ZZZZ]) -> ISO 8601 with an offset, or None."""
    if not v:
        return None
    v = v.split("^")[0]
    off = "+0000"
    for sign in ("+", "-"):
        i = v.find(sign, 8)
        if i > 0:
            v, off = v[:i], v[i:]
            break
    v = v.split(".")[0]
    if len(v) < 8 or not v[:8].isdigit():
        return None
    v = (v + "000000")[:14]
    return f"{v[0:4]}-{v[4:6]}-{v[6:8]}T{v[8:10]}:{v[10:12]}:{v[12:14]}{off}"


def comp(field, i=0):
    parts = field.split("^")
    return parts[i] if i < len(parts) and parts[i] else None


def get(fields, i):
    return fields[i] if i < len(fields) else ""


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    meta = ("source_id",)
    t = {
        "patients": Table(("patient_id", "birth_date", "sex", "zip", "given_name", "family_name") + meta,
                          ("death_time", "known_at")),
        "encounters": Table(("encounter_id", "patient_id", "class", "admission_type", "discharge_disposition",
                             "service") + meta, ("admit_time", "discharge_time", "known_at")),
        "observations": Table(("observation_id", "patient_id", "encounter_id", "code_system", "code", "display",
                               "value_text", "unit", "status") + meta, ("effective_time", "known_at"),
                              ("value_num",)),
        "conditions": Table(("condition_id", "patient_id", "encounter_id", "code_system", "code", "display") + meta,
                            ("onset_time", "known_at")),
    }
    for path in sorted(glob.glob(os.path.join(src, "*"))):
        with open(path, encoding="latin-1") as f:
            text = f.read().replace("\r\n", "\r").replace("\n", "\r")
        msg = None
        for seg in text.split("\r"):
            seg = seg.strip("\x0b\x1c ")
            if not seg:
                continue
            fields = seg.split("|")
            name = fields[0]
            if name == "MSH":
                # MSH-1 is the field separator itself: MSH-n is fields[n - 1].
                msg = {"id": get(fields, 9), "time": hl7_ts(get(fields, 6)), "pid": None, "visit": None, "n": 0}
            elif msg is None:
                continue
            elif name == "PID":
                pid = comp(get(fields, 3)) or comp(get(fields, 2))
                msg["pid"] = pid
                nm = get(fields, 5)
                t["patients"].add(patient_id=pid, birth_date=(hl7_ts(get(fields, 7)) or "")[:10] or None,
                                  sex=get(fields, 8) or None, zip=comp(get(fields, 11), 4),
                                  given_name=comp(nm, 1), family_name=comp(nm, 0),
                                  death_time=hl7_ts(get(fields, 29)), known_at=msg["time"],
                                  source_id=msg["id"])
            elif name == "PV1":
                visit = comp(get(fields, 19))
                msg["visit"] = visit
                t["encounters"].add(encounter_id=visit, patient_id=msg["pid"],
                                    **{"class": CLASSES.get(get(fields, 2), "other")},
                                    admission_type=get(fields, 4) or None,
                                    discharge_disposition=get(fields, 36) or None,
                                    service=get(fields, 10) or None,
                                    admit_time=hl7_ts(get(fields, 44)), discharge_time=hl7_ts(get(fields, 45)),
                                    known_at=msg["time"], source_id=msg["id"])
            elif name == "OBX":
                msg["n"] += 1
                code = get(fields, 3)
                value = get(fields, 5)
                t["observations"].add(observation_id=f"{msg['id']}/{msg['n']}", patient_id=msg["pid"],
                                      encounter_id=msg["visit"], code_system=comp(code, 2), code=comp(code, 0),
                                      display=comp(code, 1), value_num=num(value) if get(fields, 2) == "NM" else None,
                                      value_text=None if get(fields, 2) == "NM" else value or None,
                                      unit=comp(get(fields, 6)), status=get(fields, 11) or None,
                                      effective_time=hl7_ts(get(fields, 14)) or msg["time"],
                                      known_at=msg["time"], source_id=msg["id"])
            elif name == "DG1":
                code = get(fields, 3)
                t["conditions"].add(condition_id=f"{msg['id']}/{get(fields, 1)}", patient_id=msg["pid"],
                                    encounter_id=msg["visit"], code_system=comp(code, 2), code=comp(code, 0),
                                    display=comp(code, 1), onset_time=hl7_ts(get(fields, 5)) or msg["time"],
                                    known_at=msg["time"], source_id=msg["id"])
    rows = 0
    for name, table in t.items():
        tbl = table.to_arrow()
        rows += tbl.num_rows
        pq.write_table(tbl, os.path.join(out, f"{name}.parquet"))
    print(f"rows {rows}")
    print(f"versions python {sys.version.split()[0]} pyarrow {pa.__version__}")


if __name__ == "__main__":
    main()

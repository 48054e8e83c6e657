#!/usr/bin/env python3
"""The plain script a user would write instead of Ward for FHIR-to-table work.

Reads FHIR R4 Bulk Data NDJSON files (one resource a line, a file per type), pulls the same
fields Ward curates for Patient, Encounter, Observation (one row per component, like Ward),
Condition, Procedure and MedicationRequest (plus care-team rows from Encounter
participants), normalizes code systems to short names, builds pyarrow tables with UTC
timestamps and writes one Parquet file per table.

    python3 benches/ingest_baseline.py NDJSON_DIR OUT_DIR

Prints `rows N` (table rows written) and `versions ...`. `cargo bench --bench ingest` runs it
on the same files as Ward and reports the ratio. No error handling beyond skipping what is
missing: that is what such a script usually has (Ward quarantines bad records instead).
"""

import glob
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SYSTEMS = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD9CM",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RXNORM",
    "http://www.ama-assn.org/go/cpt": "CPT",
}
CLASSES = {"IMP": "inpatient", "EMER": "emergency", "AMB": "ambulatory", "OBSENC": "observation",
           "HH": "home", "VR": "virtual"}


def ref_id(ref):
    if not ref:
        return None
    r = ref.get("reference")
    return r.rsplit("/", 1)[-1] if r else None


def coding(cc):
    for c in (cc or {}).get("coding", []):
        if c.get("code"):
            s = c.get("system", "")
            return SYSTEMS.get(s, s), c["code"], c.get("display")
    return None, None, None


def first(lst):
    return lst[0] if lst else {}


def ts(values):
    """ISO 8601 strings with offsets -> timestamp[us, UTC] (dates get midnight UTC)."""
    arr = pa.array([v if v is None or "T" in v else v + "T00:00:00+00:00" for v in values],
                   pa.string())
    return pc.cast(pc.strptime(arr, format="%Y-%m-%dT%H:%M:%S%z", unit="us", error_is_null=True),
                   pa.timestamp("us", tz="UTC"))


class Table:
    def __init__(self, text_cols, time_cols, num_cols=()):
        self.text = {c: [] for c in text_cols}
        self.time = {c: [] for c in time_cols}
        self.num = {c: [] for c in num_cols}

    def add(self, **row):
        for cols in (self.text, self.time, self.num):
            for c, v in cols.items():
                v.append(row.get(c))

    def to_arrow(self):
        cols = {}
        for c, v in self.text.items():
            cols[c] = pa.array(v, pa.string())
        for c, v in self.num.items():
            cols[c] = pa.array(v, pa.float64())
        for c, v in self.time.items():
            cols[c] = ts(v)
        return pa.table(cols)


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    meta = ("source_id",)
    t = {
        "patients": Table(("patient_id", "birth_date", "sex", "zip", "given_name", "family_name") + meta,
                          ("death_time", "known_at")),
        "encounters": Table(("encounter_id", "patient_id", "class", "admission_type",
                             "discharge_disposition", "service", "code_system", "code", "display") + meta,
                            ("admit_time", "discharge_time", "known_at")),
        "observations": Table(("observation_id", "patient_id", "encounter_id", "category", "code_system",
                               "code", "display", "value_text", "unit", "status") + meta,
                              ("effective_time", "known_at"), ("value_num",)),
        "conditions": Table(("condition_id", "patient_id", "encounter_id", "code_system", "code", "display") + meta,
                            ("onset_time", "abatement_time", "known_at")),
        "procedures": Table(("procedure_id", "patient_id", "encounter_id", "code_system", "code", "display") + meta,
                            ("performed_time", "performed_end", "known_at")),
        "medications": Table(("medication_id", "patient_id", "encounter_id", "code_system", "code", "display",
                              "status") + meta, ("start_time", "end_time", "known_at")),
        "care_team": Table(("patient_id", "clinician_id", "role") + meta, ("valid_from", "valid_to", "known_at")),
    }
    for path in sorted(glob.glob(os.path.join(src, "*.ndjson"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                kind = r.get("resourceType")
                rid = r.get("id")
                known = (r.get("meta") or {}).get("lastUpdated")
                src_id = f"{kind}/{rid}"
                if kind == "Patient":
                    name = first(r.get("name"))
                    t["patients"].add(patient_id=rid, birth_date=r.get("birthDate"), sex=r.get("gender"),
                                      zip=first(r.get("address")).get("postalCode"),
                                      given_name=first(name.get("given")), family_name=name.get("family"),
                                      death_time=r.get("deceasedDateTime"), known_at=known, source_id=src_id)
                elif kind == "Encounter":
                    period = r.get("period") or {}
                    system, code, display = coding(first(r.get("type")))
                    hosp = r.get("hospitalization") or {}
                    pid = ref_id(r.get("subject"))
                    t["encounters"].add(
                        encounter_id=rid, patient_id=pid,
                        **{"class": CLASSES.get((r.get("class") or {}).get("code"), "other")},
                        admit_time=period.get("start"), discharge_time=period.get("end"),
                        admission_type=coding(hosp.get("admitSource"))[1],
                        discharge_disposition=coding(hosp.get("dischargeDisposition"))[1],
                        service=coding(r.get("serviceType"))[2],
                        code_system=system, code=code, display=display, known_at=known, source_id=src_id)
                    for p in r.get("participant", []):
                        cid = ref_id(p.get("individual"))
                        if cid:
                            t["care_team"].add(patient_id=pid, clinician_id=cid,
                                               role=coding(first(p.get("type")))[1] or "attending",
                                               valid_from=period.get("start"), valid_to=period.get("end"),
                                               known_at=known, source_id=src_id)
                elif kind == "Observation":
                    category = coding(first(r.get("category")))[1]
                    base = dict(patient_id=ref_id(r.get("subject")), encounter_id=ref_id(r.get("encounter")),
                                category=category, status=r.get("status"),
                                effective_time=r.get("effectiveDateTime") or (r.get("effectivePeriod") or {}).get("start"),
                                known_at=known, source_id=src_id)
                    parts = r.get("component") or [r]
                    for i, part in enumerate(parts):
                        system, code, display = coding(part.get("code"))
                        q = part.get("valueQuantity") or {}
                        text = part.get("valueString") or coding(part.get("valueCodeableConcept"))[2]
                        t["observations"].add(observation_id=rid if len(parts) == 1 else f"{rid}/{i}",
                                              code_system=system, code=code, display=display,
                                              value_num=q.get("value"), unit=q.get("unit"), value_text=text, **base)
                elif kind == "Condition":
                    system, code, display = coding(r.get("code"))
                    t["conditions"].add(condition_id=rid, patient_id=ref_id(r.get("subject")),
                                        encounter_id=ref_id(r.get("encounter")), code_system=system, code=code,
                                        display=display, onset_time=r.get("onsetDateTime") or r.get("recordedDate"),
                                        abatement_time=r.get("abatementDateTime"), known_at=known, source_id=src_id)
                elif kind == "Procedure":
                    system, code, display = coding(r.get("code"))
                    period = r.get("performedPeriod") or {}
                    t["procedures"].add(procedure_id=rid, patient_id=ref_id(r.get("subject")),
                                        encounter_id=ref_id(r.get("encounter")), code_system=system, code=code,
                                        display=display,
                                        performed_time=r.get("performedDateTime") or period.get("start"),
                                        performed_end=period.get("end"), known_at=known, source_id=src_id)
                elif kind == "MedicationRequest":
                    system, code, display = coding(r.get("medicationCodeableConcept"))
                    t["medications"].add(medication_id=rid, patient_id=ref_id(r.get("subject")),
                                         encounter_id=ref_id(r.get("encounter")), code_system=system, code=code,
                                         display=display, start_time=r.get("authoredOn"), status=r.get("status"),
                                         known_at=known, source_id=src_id)
    rows = 0
    for name, table in t.items():
        tbl = table.to_arrow()
        rows += tbl.num_rows
        pq.write_table(tbl, os.path.join(out, f"{name}.parquet"))
    print(f"rows {rows}")
    print(f"versions python {sys.version.split()[0]} pyarrow {pa.__version__}")


if __name__ == "__main__":
    main()

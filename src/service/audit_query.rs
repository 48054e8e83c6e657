//! `ward.v1.Audit`: the audit trail, queried by a privacy officer (`audit_read`; the gate
//! decides by [`crate::security::gate::route`]). The query is itself recorded, naming the patient it
//! asked about.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::{self, audit_server::Audit};
use crate::error::{Error, Result};
use crate::security::audit::{AuditLog, AuditRecord, Outcome, Patients, QueryFilter};
use crate::security::gate;
use crate::store::manifest::parse_time;

/// The most records one query returns.
pub(crate) const MAX_RECORDS: usize = 10_000;

/// The Audit service over the server's audit trail.
#[derive(Debug, Clone)]
pub(crate) struct AuditService {
    pub(crate) log: Arc<AuditLog>,
}

fn time(field: &str, s: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    if s.is_empty() {
        return Ok(None);
    }
    parse_time(s).map(Some).ok_or_else(|| {
        Error::invalid(
            field,
            format!("{s:?}: use RFC 3339 (2026-01-31T12:00:00Z) or YYYY-MM-DD"),
        )
    })
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The filter a request asks for, with the limit (plus one, to see whether more matched).
fn filter(req: &proto::AuditQueryRequest) -> Result<(QueryFilter, usize)> {
    let from = time("from", &req.from)?;
    let to = time("to", &req.to)?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(Error::invalid(
                "to",
                format!("{} is not after from ({})", req.to, req.from),
            ));
        }
    }
    let limit = match req.limit as usize {
        0 => MAX_RECORDS,
        n => n.min(MAX_RECORDS),
    };
    Ok((
        QueryFilter {
            patient: nonempty(&req.patient_id),
            principal: nonempty(&req.principal),
            from,
            to,
            limit: Some(limit + 1),
        },
        limit,
    ))
}

fn record_to_proto(r: AuditRecord) -> proto::AuditRecord {
    let AuditRecord {
        seq,
        prev,
        time,
        entry: e,
        hash,
    } = r;
    let (patient_ids, bulk_count, bulk_blake3) = match e.patients {
        Patients::Ids(ids) => (ids, 0, String::new()),
        Patients::Bulk { count, blake3 } => (Vec::new(), count, blake3),
    };
    proto::AuditRecord {
        seq,
        time: time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        principal: e.principal.unwrap_or_default(),
        auth: e.auth.unwrap_or_default(),
        roles: e.roles,
        issuer: e.issuer.unwrap_or_default(),
        key_id: e.key_id.unwrap_or_default(),
        client: e.client.unwrap_or_default(),
        rpc: e.rpc,
        action: e.action.unwrap_or_default(),
        feature_set: e.feature_set.unwrap_or_default(),
        datasets: e.datasets,
        patient_ids,
        bulk_count,
        bulk_blake3,
        decision: match e.decision {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::System => "system",
        }
        .to_string(),
        reason: e.reason,
        outcome: e.outcome.unwrap_or_default(),
        error: e.error.unwrap_or_default(),
        training_set: e.training_set.unwrap_or_default(),
        hash,
        prev,
    }
}

impl AuditService {
    async fn query(&self, req: &proto::AuditQueryRequest) -> Result<proto::AuditQueryResponse> {
        let (filter, limit) = filter(req)?;
        let dir = self.log.dir().to_path_buf();
        let keys = self.log.keys().cloned();
        // Reading the trail is file I/O: off the executor.
        let mut found = tokio::task::spawn_blocking(move || {
            crate::security::audit::search_with_keys(&dir, &filter, keys.as_ref())
        })
        .await
        .map_err(|e| Error::Internal(format!("audit query task failed: {e}")))??;
        let truncated = found.len() > limit;
        found.truncate(limit);
        Ok(proto::AuditQueryResponse {
            records: found
                .into_iter()
                .map(|a| record_to_proto(a.record))
                .collect(),
            truncated,
        })
    }
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn query_audit(
        &self,
        request: Request<proto::AuditQueryRequest>,
    ) -> std::result::Result<Response<proto::AuditQueryResponse>, Status> {
        let note = gate::note(request.extensions());
        let req = request.get_ref();
        if !req.patient_id.is_empty() {
            note.set_patients(std::slice::from_ref(&req.patient_id));
        }
        Ok(Response::new(self.query(req).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        let req = |from: &str, to: &str| proto::AuditQueryRequest {
            from: from.into(),
            to: to.into(),
            ..Default::default()
        };
        assert!(filter(&req("2026-01-02", "2026-01-01")).is_err());
        let e = filter(&req("yesterday", "")).unwrap_err().to_string();
        assert!(e.contains("from") && e.contains("yesterday"), "{e}");
        let (f, limit) = filter(&req("2026-01-01", "2026-01-02")).unwrap();
        assert_eq!(limit, MAX_RECORDS);
        assert_eq!(f.limit, Some(MAX_RECORDS + 1));
        assert!(f.from.is_some() && f.to.is_some() && f.patient.is_none());
    }
}

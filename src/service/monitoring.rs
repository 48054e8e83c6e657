//! `ward.v1.Monitoring`: drift and the training/serving skew check over the online lookup
//! log ([`crate::monitoring`], `docs/monitoring.md`). The gate decides both
//! ([`crate::security::gate::route`]: `Drift` needs `datasets_read`, `Skew`
//! `historical_identified`); the work runs on the job runtime.

use tonic::{Request, Response, Status};

use super::proto::{self, monitoring_server::Monitoring};
use super::{parse_ref, State};
use crate::error::{Error, Result};
use crate::monitoring::{self, DriftReport, DriftRequest, SkewReport};
use crate::security::gate;
use crate::store::manifest::parse_time;

/// The Monitoring service over the server's store.
#[derive(Debug, Clone)]
pub(crate) struct MonitoringService {
    pub(crate) state: State,
}

/// An optional time field (`since`).
fn since(s: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    if s.is_empty() {
        return Ok(None);
    }
    parse_time(s).map(Some).ok_or_else(|| {
        Error::invalid(
            "since",
            format!("{s:?}: use RFC 3339 (2026-01-31T12:00:00Z) or YYYY-MM-DD"),
        )
    })
}

fn drift_to_proto(r: DriftReport) -> proto::DriftResponse {
    proto::DriftResponse {
        training: r.training.to_string(),
        training_name: r.training_name,
        online: r.online.to_string(),
        online_versions: r.online_versions as u64,
        online_lookups: r.online_lookups as u64,
        online_values: r.online_values as u64,
        features: r
            .features
            .into_iter()
            .map(|f| proto::FeatureDrift {
                feature: f.feature,
                kind: f.kind.to_string(),
                psi: f.psi,
                level: f.level.as_str().to_string(),
                training_values: f.training_values,
                online_values: f.online_values,
                bins: f
                    .bins
                    .into_iter()
                    .map(|b| proto::DriftBin {
                        label: b.label,
                        training: b.training,
                        online: b.online,
                    })
                    .collect(),
            })
            .collect(),
        not_served: r.not_served,
        not_trained: r.not_trained,
        max_psi: r.max_psi,
    }
}

fn skew_to_proto(r: SkewReport) -> proto::SkewResponse {
    proto::SkewResponse {
        ok: r.ok(),
        online: r.online.to_string(),
        online_versions: r.online_versions as u64,
        lookups: r.lookups as u64,
        values: r.values,
        differing: r.differing,
        unreplayable: r.unreplayable,
        timelines: r.timelines,
        features: r
            .features
            .into_iter()
            .map(|f| proto::FeatureSkew {
                feature: f.feature,
                compared: f.compared,
                differing: f.differing,
            })
            .collect(),
        examples: r
            .examples
            .into_iter()
            .map(|m| proto::SkewMismatch {
                seq: m.seq,
                patient_id: m.patient_id,
                as_of: m.as_of.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                timeline: m.timeline,
                feature: m.feature,
                logged: m.logged,
                replayed: m.replayed,
            })
            .collect(),
        notes: r.notes,
    }
}

impl MonitoringService {
    async fn drift(
        &self,
        req: proto::DriftRequest,
        note: &crate::security::note::AuditNote,
    ) -> Result<proto::DriftResponse> {
        let dr = DriftRequest {
            training: parse_ref("training", &req.training)?,
            online: parse_ref("online", &req.online)?,
            since: since(&req.since)?,
            feature_set: (!req.feature_set.is_empty()).then_some(req.feature_set),
        };
        let store = self.state.store.clone();
        let report = self
            .state
            .jobs
            .run(async move { monitoring::drift(&store, &dr).await })
            .await?;
        note.add_datasets([report.training.to_string(), report.online.to_string()]);
        Ok(drift_to_proto(report))
    }

    async fn skew(
        &self,
        req: proto::SkewRequest,
        note: &crate::security::note::AuditNote,
    ) -> Result<proto::SkewResponse> {
        let online = parse_ref("online", &req.online)?;
        let since = since(&req.since)?;
        let store = self.state.store.clone();
        let report = self
            .state
            .jobs
            .run(async move { monitoring::skew(&store, &online, since).await })
            .await?;
        note.add_datasets([report.online.to_string()]);
        note.add_datasets(report.timelines.iter().cloned());
        let mut patients: Vec<String> = report
            .examples
            .iter()
            .map(|m| m.patient_id.clone())
            .collect();
        patients.sort();
        patients.dedup();
        if !patients.is_empty() {
            note.set_patients(&patients);
        }
        Ok(skew_to_proto(report))
    }
}

#[tonic::async_trait]
impl Monitoring for MonitoringService {
    async fn drift(
        &self,
        request: Request<proto::DriftRequest>,
    ) -> std::result::Result<Response<proto::DriftResponse>, Status> {
        let note = gate::note(request.extensions());
        Ok(Response::new(
            self.drift(request.into_inner(), &note).await?,
        ))
    }

    async fn skew(
        &self,
        request: Request<proto::SkewRequest>,
    ) -> std::result::Result<Response<proto::SkewResponse>, Status> {
        let note = gate::note(request.extensions());
        Ok(Response::new(self.skew(request.into_inner(), &note).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::since;
    use crate::security::gate::{route, Route};
    use crate::security::policy::Action;

    #[test]
    fn drift_needs_datasets_read_and_skew_historical_identified() {
        assert_eq!(
            route("/ward.v1.Monitoring/Drift"),
            Some(Route::Gate(Action::DatasetsRead))
        );
        assert_eq!(
            route("/ward.v1.Monitoring/Skew"),
            Some(Route::Gate(Action::HistoricalIdentified))
        );
        assert_eq!(route("/ward.v1.Monitoring/Other"), None);
    }

    #[test]
    fn since_is_optional_and_named_when_bad() {
        assert_eq!(since("").expect("empty"), None);
        assert!(since("2026-01-31").expect("date").is_some());
        let e = since("soon").expect_err("bad").to_string();
        assert!(e.contains("since"), "{e}");
    }
}

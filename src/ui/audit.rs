//! The audit page for privacy officers (`docs/ui.md`, "Audit"): who accessed a patient, when,
//! from where, allowed or refused, filtered by patient, subject, time range and decision,
//! and the chain's verification status. The trail is read and verified by
//! [`crate::security::audit::search`] and [`crate::security::audit::verify`]; this module
//! parses the page's filter and writes the page.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::catalog::percent_decode;
use super::html::{escape, page};
use crate::error::{Error, Result};
use crate::security::audit::{Access, Outcome, Patients, QueryFilter, VerifyReport};
use crate::store::manifest::parse_time;

/// Records shown when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 200;
/// The most records one page shows.
pub const MAX_LIMIT: usize = 2_000;

/// The page's filter, as typed (kept to refill the form).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// A patient id (exact).
    pub patient: String,
    /// A principal's subject (exact).
    pub subject: String,
    /// From this time (inclusive), RFC 3339 or `YYYY-MM-DD`.
    pub from: String,
    /// Before this time (exclusive).
    pub to: String,
    /// `allowed`, `denied` or empty for both.
    pub decision: String,
    /// The newest records shown.
    pub limit: usize,
}

/// The parsed form of a [`Filter`].
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// What [`crate::security::audit::search`] selects.
    pub query: QueryFilter,
    /// Only this decision.
    pub decision: Option<Outcome>,
}

fn time(field: &str, s: &str) -> Result<Option<DateTime<Utc>>> {
    if s.is_empty() {
        return Ok(None);
    }
    parse_time(s).map(Some).ok_or_else(|| {
        Error::invalid(
            format!("query {field}"),
            format!("{s:?}: use RFC 3339 (2026-01-31T12:00:00Z) or YYYY-MM-DD"),
        )
    })
}

impl Filter {
    /// Parses `patient=&subject=&from=&to=&decision=&limit=`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the parameter.
    pub fn parse(query: &str) -> Result<(Filter, Parsed)> {
        let mut f = Filter {
            limit: DEFAULT_LIMIT,
            ..Filter::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).map_err(|why| Error::invalid(format!("query {k}"), why))?;
            let v = v.trim().to_string();
            match k {
                "patient" => f.patient = v,
                "subject" => f.subject = v,
                "from" => f.from = v,
                "to" => f.to = v,
                "decision" => f.decision = v,
                "limit" if v.is_empty() => {}
                "limit" => {
                    f.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            Error::invalid(
                                "query limit",
                                format!("{v:?}: give a whole number from 1 to {MAX_LIMIT}"),
                            )
                        })?;
                }
                _ => return Err(Error::invalid(
                    format!("query {k}"),
                    "not known: the parameters are patient, subject, from, to, decision and limit",
                )),
            }
        }
        let from = time("from", &f.from)?;
        let to = time("to", &f.to)?;
        if let (Some(a), Some(b)) = (from, to) {
            if a >= b {
                return Err(Error::invalid(
                    "query to",
                    format!("{} is not after from ({})", f.to, f.from),
                ));
            }
        }
        let decision = match f.decision.as_str() {
            "" => None,
            "allowed" => Some(Outcome::Allowed),
            "denied" => Some(Outcome::Denied),
            other => {
                return Err(Error::invalid(
                    "query decision",
                    format!("{other:?}: give allowed or denied (or nothing for both)"),
                ))
            }
        };
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let parsed = Parsed {
            query: QueryFilter {
                patient: nonempty(&f.patient),
                principal: nonempty(&f.subject),
                from,
                to,
                limit: None,
            },
            decision,
        };
        Ok((f, parsed))
    }
}

/// The records `p` selects from `found` (oldest first), newest first, at most `limit`, and
/// how many matched in all.
pub fn newest(found: Vec<Access>, p: &Parsed, limit: usize) -> (Vec<Access>, usize) {
    let mut kept: Vec<Access> = found
        .into_iter()
        .filter(|a| p.decision.is_none_or(|d| a.record.entry.decision == d))
        .collect();
    let total = kept.len();
    kept.reverse();
    kept.truncate(limit);
    (kept, total)
}

/// The verification status block: verified (records, files, HEAD), or the first problem.
pub fn status(report: &std::result::Result<VerifyReport, String>) -> String {
    match report {
        Ok(r) if r.ok() => {
            let mut s = format!(
                "<p class=\"status ok\" id=\"chain-status\" role=\"status\"><strong>Chain verified</strong>: {} records in {} files, every hash, sequence number and link checked",
                r.records, r.files
            );
            if let Some(h) = r.head_seq {
                let _ = write!(s, "; HEAD at seq {h}");
            }
            if r.after_head > 0 {
                let _ = write!(s, " ({} records after HEAD, not yet flushed)", r.after_head);
            }
            if !r.recovered.is_empty() {
                let _ = write!(
                    s,
                    "; {} torn lines sealed after crashes (kept in audit.recover records)",
                    r.recovered.len()
                );
            }
            s.push_str(".</p>\n");
            s
        }
        Ok(r) => format!(
            "<p class=\"status broken\" id=\"chain-status\" role=\"alert\"><strong>Chain broken</strong>: {} (verified {} records before it).</p>\n",
            escape(&r.problem.as_ref().map(ToString::to_string).unwrap_or_default()),
            r.records
        ),
        Err(e) => format!(
            "<p class=\"status broken\" id=\"chain-status\" role=\"alert\"><strong>Chain not verified</strong>: {}</p>\n",
            escape(e)
        ),
    }
}

/// The patients of a record as shown.
fn patients(p: &Patients) -> String {
    match p {
        Patients::Ids(ids) if ids.is_empty() => "-".into(),
        Patients::Ids(ids) => ids
            .iter()
            .map(|i| format!("<code>{}</code>", escape(i)))
            .collect::<Vec<_>>()
            .join(", "),
        Patients::Bulk { count, blake3 } => format!(
            "{count} (bulk, <abbr title=\"BLAKE3 of the sorted ids: {}\">hashed</abbr>)",
            escape(blake3)
        ),
    }
}

/// The audit page: the filter form, the verification status, the records.
pub fn html(
    f: &Filter,
    rows: &[Access],
    total: usize,
    report: &std::result::Result<VerifyReport, String>,
) -> String {
    let mut b = String::from("<h1>Audit trail</h1>\n");
    b.push_str("<section aria-labelledby=\"h-chain\">\n<h2 id=\"h-chain\">Verification</h2>\n");
    b.push_str(&status(report));
    b.push_str("</section>\n");
    b.push_str("<section aria-labelledby=\"h-access\">\n<h2 id=\"h-access\">Accesses</h2>\n");
    b.push_str("<form method=\"get\" action=\"/ui/audit\" class=\"search\" role=\"search\" aria-label=\"Filter the audit trail\">\n");
    let field = |b: &mut String, id: &str, label: &str, value: &str, hint: &str| {
        let _ = write!(
            b,
            "<div><label for=\"{id}\">{label}</label>\n<input id=\"{id}\" name=\"{id}\" type=\"text\" value=\"{}\"{}></div>\n",
            escape(value),
            if hint.is_empty() {
                String::new()
            } else {
                format!(" aria-describedby=\"time-hint\" placeholder=\"{hint}\"")
            }
        );
    };
    field(&mut b, "patient", "Patient id", &f.patient, "");
    field(&mut b, "subject", "Subject (who)", &f.subject, "");
    field(&mut b, "from", "From (inclusive)", &f.from, "2026-01-31");
    field(
        &mut b,
        "to",
        "To (exclusive)",
        &f.to,
        "2026-02-01T00:00:00Z",
    );
    b.push_str("<div><label for=\"decision\">Decision</label>\n<select id=\"decision\" name=\"decision\">\n");
    for (v, label) in [
        ("", "allowed or refused"),
        ("allowed", "allowed"),
        ("denied", "refused"),
    ] {
        let sel = if f.decision == v { " selected" } else { "" };
        let _ = writeln!(b, "<option value=\"{v}\"{sel}>{label}</option>");
    }
    b.push_str("</select></div>\n<div><button type=\"submit\">Search</button></div>\n</form>\n");
    b.push_str("<p id=\"time-hint\" class=\"hint\">Times are UTC: RFC 3339 (2026-01-31T12:00:00Z) or a date (its midnight).</p>\n");
    let _ = writeln!(
        b,
        "<p id=\"acount\" aria-live=\"polite\">{} of {total} matching records shown, newest first.</p>",
        rows.len()
    );
    b.push_str("<table class=\"audit\" aria-describedby=\"acount\">\n<caption>Audit records</caption>\n<thead><tr>");
    for h in [
        "Time (UTC)",
        "Subject (roles)",
        "From",
        "Request (action)",
        "Decision",
        "Patients",
        "Reason",
        "Seq",
    ] {
        let _ = write!(b, "<th scope=\"col\">{h}</th>");
    }
    b.push_str("</tr></thead>\n<tbody>\n");
    for a in rows {
        let r = &a.record;
        let e = &r.entry;
        let (decision, class) = match e.decision {
            Outcome::Allowed => ("allowed", "allowed"),
            Outcome::Denied => ("refused", "denied"),
            Outcome::System => ("system", "system"),
        };
        let mut reason = escape(&e.reason);
        if let Some(o) = e.outcome.as_deref().filter(|o| *o != "ok") {
            let _ = write!(reason, " <em>({})</em>", escape(o));
        }
        let _ = writeln!(
            b,
            "<tr class=\"{class}\"><td class=\"time\">{time}</td><td><span class=\"who\">{who}</span><br><small>{roles}</small></td><td class=\"client\"><code>{client}</code></td><td><code class=\"rpc\">{rpc}</code><br><small>{action}</small></td><td class=\"decision\">{decision}</td><td class=\"patients\">{patients}</td><td>{reason}</td><th scope=\"row\" class=\"num\">{seq}</th></tr>",
            time = r.time.format("%Y-%m-%d<br>%H:%M:%S"),
            who = escape(e.principal.as_deref().unwrap_or("(not authenticated)")),
            roles = escape(&e.roles.join(", ")),
            client = escape(e.client.as_deref().unwrap_or("-")),
            rpc = escape(&e.rpc),
            action = escape(e.action.as_deref().unwrap_or("-")),
            patients = patients(&e.patients),
            seq = r.seq,
        );
    }
    b.push_str("</tbody>\n</table>\n</section>\n");
    page("Audit trail", &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::audit::{AuditEntry, AuditRecord};

    fn access(seq: u64, patient: &str, decision: Outcome) -> Access {
        let mut e = AuditEntry::new("/ward.v1.Features/GetOnlineFeatures", decision, "<why>");
        e.principal = Some("dr-a".into());
        e.patients = Patients::Ids(vec![patient.into()]);
        Access {
            file: "audit-000001.jsonl".into(),
            record: AuditRecord {
                seq,
                prev: String::new(),
                time: "2026-03-01T12:00:00Z".parse().expect("time"),
                entry: e,
                hash: String::new(),
            },
        }
    }

    #[test]
    fn the_filter_is_parsed_and_checked() {
        let (f, p) = Filter::parse("patient=p%2D1&subject=dr-a&from=2026-03-01&to=2026-03-02T00%3A00%3A00Z&decision=denied&limit=5").expect("parse");
        assert_eq!(f.patient, "p-1");
        assert_eq!(p.query.patient.as_deref(), Some("p-1"));
        assert_eq!(p.query.principal.as_deref(), Some("dr-a"));
        assert!(p.query.from.is_some() && p.query.to.is_some());
        assert_eq!((p.decision, f.limit), (Some(Outcome::Denied), 5));
        for (bad, names) in [
            ("from=yesterday", "query from"),
            ("from=2026-03-02&to=2026-03-01", "query to"),
            ("decision=maybe", "query decision"),
            ("limit=0", "query limit"),
            ("who=x", "query who"),
        ] {
            let e = Filter::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(names), "{bad}: {e}");
        }
    }

    #[test]
    fn newest_first_by_decision_and_the_page_escapes() {
        let found = vec![
            access(0, "p1", Outcome::Allowed),
            access(1, "p1", Outcome::Denied),
            access(2, "p<1>", Outcome::Allowed),
        ];
        let (_, p) = Filter::parse("decision=allowed").expect("parse");
        let (rows, total) = newest(found, &p, 1);
        assert_eq!(total, 2);
        assert_eq!(rows[0].record.seq, 2);
        let (f, _) = Filter::parse("").expect("parse");
        let html = html(&f, &rows, total, &Err("no trail <x>".into()));
        assert!(html.contains("<code>p&lt;1&gt;</code>") && html.contains("&lt;why&gt;"));
        assert!(html.contains("Chain not verified") && html.contains("no trail &lt;x&gt;"));
        assert!(html.contains("<label for=\"patient\">"));
    }
}

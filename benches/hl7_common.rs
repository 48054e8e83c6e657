//! HL7 v2 helpers the benches that send messages share (`live`, `change`): reading fields,
//! and the probe message whose value shows when a change reached online lookups.

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Field `n` of the first segment `seg` (MSH counted as HL7 does: MSH-1 is the separator).
pub(crate) fn field(msg: &[u8], seg: &str, n: usize) -> String {
    let text = String::from_utf8_lossy(msg);
    let line = text
        .split('\r')
        .find(|l| l.starts_with(seg))
        .unwrap_or_default();
    let idx = if seg == "MSH" { n - 1 } else { n };
    line.split('|').nth(idx).unwrap_or_default().to_string()
}

pub(crate) fn patient(msg: &[u8]) -> String {
    field(msg, "PID", 3)
        .split('^')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The probe: the template with a new control id, "now" for every timestamp of the template
/// (every field `YYYYMMDDHHMMSS+0000`: the message time, the observation and result times)
/// and `value` as the hemoglobin result.
pub(crate) fn probe_message(template: &[u8], control: &str, now: &str, value: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(template);
    let is_time = |f: &str| {
        f.len() == 19 && f.ends_with("+0000") && f[..14].bytes().all(|b| b.is_ascii_digit())
    };
    let mut out = Vec::new();
    for seg in text.split('\r').filter(|s| !s.is_empty()) {
        let hemoglobin = seg.starts_with("OBX|") && seg.contains("|718-7^");
        let mut fields: Vec<&str> = seg.split('|').collect();
        for (i, f) in fields.iter_mut().enumerate() {
            if is_time(f) {
                *f = now;
            } else if seg.starts_with("MSH|") && i == 9 {
                *f = control;
            } else if hemoglobin && i == 5 {
                *f = value;
            }
        }
        out.extend_from_slice(fields.join("|").as_bytes());
        out.push(b'\r');
    }
    out
}

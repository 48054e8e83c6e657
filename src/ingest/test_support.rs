//! Helpers shared by the unit tests of the ingest parsers (FHIR, HL7 v2, mappings).

use super::Input;

/// One [`Input`] per `(name, text)` pair, borrowing them.
pub(crate) fn inputs<'a, N: AsRef<str>, T: AsRef<str>>(files: &'a [(N, T)]) -> Vec<Input<'a>> {
    files
        .iter()
        .map(|(name, text)| Input {
            name: name.as_ref(),
            bytes: text.as_ref().as_bytes(),
        })
        .collect()
}

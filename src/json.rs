//! The JSON documents lazarus-pit writes: one format for `cell.json`,
//! `state.json`, records and handoff packets. A format, not storage: the
//! pure core's models use it without reaching the file store.

/// A JSON document as lazarus-pit writes it to a file: pretty-printed,
/// with a final newline.
pub fn document(value: &impl serde::Serialize) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_default();
    out.push(b'\n');
    out
}

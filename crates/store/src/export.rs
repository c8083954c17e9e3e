//! `switchboard cdr export --since … --format csv|jsonl`. Both formats carry the same flat
//! columns, so a report built on one reads the other. Exports stream from the database: memory
//! stays constant however long the period.
//!
//! Exports are for people who may see callers' numbers (the numbers are in full); the CLI that
//! calls these is behind the admin token.

use std::io::Write;

use serde::Serialize;

use crate::backend::StoreBackend;
use crate::error::StoreError;
use crate::record::{Cdr, LineMode, UnixMs};

/// The exported columns, in order.
pub const CDR_COLUMNS: &[&str] = &[
    "call_id",
    "caller",
    "dialed",
    "normalized",
    "line",
    "mode",
    "prefecture",
    "entry_queue",
    "answer_queue",
    "agent",
    "target",
    "arrival_ms",
    "queued_ms",
    "offered_ms",
    "answered_ms",
    "ended_ms",
    "outcome",
    "status",
    "work_order",
];

/// One exported row: the CDR flattened (the outcome as a name and a status column).
#[derive(Serialize)]
struct Row<'a> {
    call_id: &'a str,
    caller: &'a str,
    dialed: &'a str,
    normalized: &'a str,
    line: Option<&'a str>,
    mode: Option<&'static str>,
    prefecture: Option<&'a str>,
    entry_queue: Option<&'a str>,
    answer_queue: Option<&'a str>,
    agent: Option<&'a str>,
    target: Option<&'a str>,
    arrival_ms: UnixMs,
    queued_ms: Option<UnixMs>,
    offered_ms: Option<UnixMs>,
    answered_ms: Option<UnixMs>,
    ended_ms: UnixMs,
    outcome: &'static str,
    status: Option<u16>,
    work_order: Option<&'a str>,
}

impl<'a> Row<'a> {
    fn of(c: &'a Cdr) -> Row<'a> {
        Row {
            call_id: &c.call_id,
            caller: &c.caller,
            dialed: &c.dialed,
            normalized: &c.normalized,
            line: c.line.as_deref(),
            mode: c.mode.map(LineMode::as_str),
            prefecture: c.prefecture.as_deref(),
            entry_queue: c.entry_queue.as_deref(),
            answer_queue: c.answer_queue.as_deref(),
            agent: c.agent.as_deref(),
            target: c.target.as_deref(),
            arrival_ms: c.arrival_ms,
            queued_ms: c.queued_ms,
            offered_ms: c.offered_ms,
            answered_ms: c.answered_ms,
            ended_ms: c.ended_ms,
            outcome: c.outcome.as_str(),
            status: c.outcome.status(),
            work_order: c.work_order.as_deref(),
        }
    }
}

/// Writes one RFC 4180 field: quoted when it holds a comma, quote, CR or LF, quotes doubled.
fn csv_field(out: &mut dyn Write, s: &str) -> std::io::Result<()> {
    if s.contains([',', '"', '\r', '\n']) {
        out.write_all(b"\"")?;
        out.write_all(s.replace('"', "\"\"").as_bytes())?;
        out.write_all(b"\"")
    } else {
        out.write_all(s.as_bytes())
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Writes the CDRs of calls that arrived at or after `since_ms` as CSV with a header line
/// (RFC 4180, CRLF line ends, empty fields for absent values). Returns the rows written.
pub fn write_csv<B: StoreBackend + ?Sized>(
    backend: &mut B,
    since_ms: UnixMs,
    out: &mut dyn Write,
) -> Result<u64, StoreError> {
    out.write_all(CDR_COLUMNS.join(",").as_bytes())?;
    out.write_all(b"\r\n")?;
    let mut n = 0;
    backend.for_each_cdr_since(since_ms, &mut |c| {
        let r = Row::of(&c);
        let fields: [String; 19] = [
            r.call_id.to_owned(),
            r.caller.to_owned(),
            r.dialed.to_owned(),
            r.normalized.to_owned(),
            opt(r.line),
            opt(r.mode),
            opt(r.prefecture),
            opt(r.entry_queue),
            opt(r.answer_queue),
            opt(r.agent),
            opt(r.target),
            r.arrival_ms.to_string(),
            opt(r.queued_ms),
            opt(r.offered_ms),
            opt(r.answered_ms),
            r.ended_ms.to_string(),
            r.outcome.to_owned(),
            opt(r.status),
            opt(r.work_order),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            csv_field(out, f)?;
        }
        out.write_all(b"\r\n")?;
        n += 1;
        Ok(())
    })?;
    out.flush()?;
    Ok(n)
}

/// Writes the same rows as [`write_csv`] as JSON Lines: one object per line, absent values as
/// `null`. Returns the rows written.
pub fn write_jsonl<B: StoreBackend + ?Sized>(
    backend: &mut B,
    since_ms: UnixMs,
    out: &mut dyn Write,
) -> Result<u64, StoreError> {
    let mut n = 0;
    backend.for_each_cdr_since(since_ms, &mut |c| {
        serde_json::to_writer(&mut *out, &Row::of(&c)).map_err(|source| StoreError::Json {
            table: "cdr",
            source,
        })?;
        out.write_all(b"\n")?;
        n += 1;
        Ok(())
    })?;
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut v = Vec::new();
        for s in ["plain", "a,b", "say \"hi\"", "two\nlines", ""] {
            csv_field(&mut v, s).unwrap();
            v.push(b'|');
        }
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"||"
        );
    }
}

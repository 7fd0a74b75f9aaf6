//! Records: reading, checking and decoding the CRC32C-framed records of a segment.

use std::fs::File;
use std::io;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::BODY_HEAD_LEN;
use super::FRAME_LEN;
use super::KIND_BLANK;
use super::KIND_MEMBERSHIP;
use super::KIND_NORMAL;
use super::inner::Loc;
use crate::codec::Dec;
use crate::types::Command;
use crate::types::Entry;
use crate::types::EntryPayload;
use crate::types::LogId;

/// Why a record could not be read during recovery.
pub(super) enum BadRecord {
    /// Fewer bytes than a frame, or a length pointing past the end of the file.
    Short(String),
    /// A complete record whose checksum or body is wrong.
    Damaged(String),
}

/// Reads the record at `pos` into `body`; returns its log id.
pub(super) fn read_record(rd: &mut impl Read, pos: u64, file_len: u64, body: &mut Vec<u8>) -> Result<LogId, BadRecord> {
    body.clear();
    if file_len - pos < FRAME_LEN as u64 {
        return Err(BadRecord::Short(format!("short record frame ({} bytes)", file_len - pos)));
    }
    let mut frame = [0u8; FRAME_LEN];
    rd.read_exact(&mut frame).map_err(|e| BadRecord::Short(format!("read error {e}")))?;
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as u64;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len > file_len - pos - FRAME_LEN as u64 {
        return Err(BadRecord::Short(format!("record length {len} past the end of the file")));
    }
    body.resize(len as usize, 0);
    rd.read_exact(body).map_err(|e| BadRecord::Short(format!("read error {e}")))?;
    if crc32c::crc32c(body) != crc {
        return Err(BadRecord::Damaged("record checksum mismatch".into()));
    }
    let (log_id, _) = decode_head(body).map_err(BadRecord::Damaged)?;
    Ok(log_id)
}

/// Whether a complete record with a valid checksum and body starts at `pos`.
pub(super) fn valid_record_at(file: &File, pos: u64, file_len: u64) -> bool {
    let mut frame = [0u8; FRAME_LEN];
    if file_len - pos < FRAME_LEN as u64 || file.read_exact_at(&mut frame, pos).is_err() {
        return false;
    }
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as u64;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len < BODY_HEAD_LEN as u64 || len > file_len - pos - FRAME_LEN as u64 {
        return false;
    }
    let mut body = vec![0u8; len as usize];
    file.read_exact_at(&mut body, pos + FRAME_LEN as u64).is_ok()
        && crc32c::crc32c(&body) == crc
        && decode_head(&body).is_ok()
}

/// Decodes the fixed part of a record body: its log id and kind.
fn decode_head(body: &[u8]) -> Result<(LogId, u8), String> {
    if body.len() < BODY_HEAD_LEN {
        return Err(format!("record body of {} bytes is too short", body.len()));
    }
    let mut d = Dec::new(&body[..BODY_HEAD_LEN]);
    let kind = d.u8("kind")?;
    if kind > KIND_MEMBERSHIP {
        return Err(format!("unknown record kind {kind}"));
    }
    let log_id = d.log_id()?;
    if kind == KIND_BLANK && body.len() != BODY_HEAD_LEN {
        return Err("blank record with a payload".into());
    }
    Ok((log_id, kind))
}

/// Builds an entry from a checked record head and its payload (moved, not copied).
fn decode_entry(head: &[u8], payload: Vec<u8>) -> Result<Entry, String> {
    let (log_id, kind) = decode_head(head)?;
    let payload = match kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(Command(payload)),
        _ => EntryPayload::Membership(Dec::new(&payload).membership()?),
    };
    Ok(Entry { log_id, payload })
}

/// Reads and checks the entry at `loc`, which must hold log index `index`.
pub(super) fn read_entry(file: &File, loc: &Loc, index: u64, dir: &Path) -> io::Result<Entry> {
    let bad = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("log {}: segment {} offset {}: {what}", dir.display(), loc.seg, loc.offset),
        )
    };
    let body_len = loc.body_len as usize;
    let mut head = [0u8; FRAME_LEN + BODY_HEAD_LEN];
    let payload = if body_len <= 64 << 10 {
        let mut buf = vec![0u8; FRAME_LEN + body_len];
        file.read_exact_at(&mut buf, loc.offset)?;
        head.copy_from_slice(&buf[..FRAME_LEN + BODY_HEAD_LEN]);
        buf[FRAME_LEN + BODY_HEAD_LEN..].to_vec()
    } else {
        file.read_exact_at(&mut head, loc.offset)?;
        let mut payload = vec![0u8; body_len - BODY_HEAD_LEN];
        file.read_exact_at(&mut payload, loc.offset + (FRAME_LEN + BODY_HEAD_LEN) as u64)?;
        payload
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len != loc.body_len {
        return Err(bad(format!("record length {len}, index says {}", loc.body_len)));
    }
    if crc32c::crc32c_append(crc32c::crc32c(&head[FRAME_LEN..]), &payload) != crc {
        return Err(bad("record checksum mismatch".into()));
    }
    let entry = decode_entry(&head[FRAME_LEN..], payload).map_err(bad)?;
    if entry.log_id != loc.log_id(index) {
        return Err(bad(format!(
            "record holds log id {}, expected {} (log changed during the read)",
            entry.log_id,
            loc.log_id(index)
        )));
    }
    Ok(entry)
}

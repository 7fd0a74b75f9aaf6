//! Scroll on the wire: the opaque resume token, and pages of points <-> `ScrollResponse` / `ScanRequest`.
//!
//! ```text
//!   resume token (version 1), little-endian:
//!     u8 version = 1 | u64 collection uid | u32 shard | u8 kind | id
//!     kind 0: no id (the shard from its first point), 1: int id (u64), 2: str id (u32 length + UTF-8)
//! ```

use shoal_core::store::PointRecord;
use shoal_core::{IdType, PointId};

use crate::internal::ScanRequest;
use crate::points::{ids_from_proto, ids_to_proto, payload_to_text, payloads_from_text};
use crate::v1::ScrollResponse;
use crate::{Error, Result};

/// Format version of the resume tokens this build writes (and the only one it reads).
pub const SCROLL_TOKEN_VERSION: u8 = 1;

/// Where a scroll stands: the next points are those of `shard` after `after`, then the higher shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrollPosition {
    /// The incarnation of the collection the scroll reads (a dropped and re-created collection differs).
    pub uid: u64,
    /// The shard being read.
    pub shard: u32,
    /// The last id returned from `shard` (`None` = none yet).
    pub after: Option<PointId>,
}

impl ScrollPosition {
    /// Encodes the position as an opaque resume token.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.push(SCROLL_TOKEN_VERSION);
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.shard.to_le_bytes());
        match &self.after {
            None => out.push(0),
            Some(PointId::Int(v)) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Some(PointId::Str(s)) => {
                out.push(2);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }

    /// Decodes a resume token; a malformed one is an invalid-argument error naming `resume_token`.
    pub fn decode(token: &[u8]) -> Result<ScrollPosition> {
        let bad = |why: &str| Error::invalid(format!("resume_token is not a scroll token of this cluster: {why}"));
        let (&version, rest) = token.split_first().ok_or_else(|| bad("it is empty"))?;
        if version != SCROLL_TOKEN_VERSION {
            return Err(bad(&format!("format version {version}, this build reads {SCROLL_TOKEN_VERSION}")));
        }
        let mut r = Reader(rest);
        let uid = u64::from_le_bytes(r.take(8).ok_or_else(|| bad("truncated"))?.try_into().unwrap_or_default());
        let shard = u32::from_le_bytes(r.take(4).ok_or_else(|| bad("truncated"))?.try_into().unwrap_or_default());
        let kind = r.take(1).ok_or_else(|| bad("truncated"))?[0];
        let after = match kind {
            0 => None,
            1 => {
                let b = r.take(8).ok_or_else(|| bad("truncated"))?;
                Some(PointId::Int(u64::from_le_bytes(b.try_into().unwrap_or_default())))
            }
            2 => {
                let len = r.take(4).ok_or_else(|| bad("truncated"))?;
                let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
                let b = r.take(len).ok_or_else(|| bad("truncated"))?;
                Some(PointId::Str(String::from_utf8(b.to_vec()).map_err(|_| bad("its id is not UTF-8"))?))
            }
            k => return Err(bad(&format!("unknown id kind {k}"))),
        };
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(ScrollPosition { uid, shard, after })
    }
}

/// A cursor over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
}

/// Encodes a page of points (in id order) as a `ScrollResponse` carrying `resume_token`.
pub fn scroll_response(records: Vec<PointRecord>, dim: u32, resume_token: Vec<u8>) -> ScrollResponse {
    let mut out = ScrollResponse { dim, resume_token, ..Default::default() };
    let mut ids = Vec::with_capacity(records.len());
    for rec in records {
        out.vectors.extend_from_slice(&rec.vector);
        out.payloads.push(payload_to_text(rec.payload.as_ref()));
        ids.push(rec.id);
    }
    out.ids = Some(ids_to_proto(&ids));
    out
}

/// Decodes a page sent by [`scroll_response`] (versions are not carried and come back as zero).
pub fn records_from_scroll(resp: ScrollResponse, id_type: IdType) -> Result<Vec<PointRecord>> {
    let ids = ids_from_proto(resp.ids.as_ref(), id_type)?;
    let dim = resp.dim as usize;
    let with_vectors = !resp.vectors.is_empty();
    if (with_vectors && resp.vectors.len() != ids.len() * dim) || resp.payloads.len() != ids.len() {
        return Err(Error::invalid("ScrollResponse: vectors or payloads do not match the ids"));
    }
    let payloads = payloads_from_text(&resp.payloads, "payloads")?;
    let mut vectors = resp.vectors.chunks_exact(dim.max(1));
    Ok(ids
        .into_iter()
        .zip(payloads)
        .map(|(id, payload)| PointRecord {
            id,
            vector: if with_vectors { vectors.next().map(<[f32]>::to_vec).unwrap_or_default() } else { Vec::new() },
            payload,
            version: shoal_core::hlc::Version::default(),
        })
        .collect())
}

/// One page of a shard scan, as sent to the replica serving it.
pub fn scan_request(after: Option<&PointId>, limit: usize, filter: &str, with_vectors: bool) -> ScanRequest {
    ScanRequest {
        after: after.map(|id| ids_to_proto(std::slice::from_ref(id))),
        limit: limit.min(u32::MAX as usize) as u32,
        filter: filter.to_string(),
        with_vectors,
    }
}

/// The `after` id of a received `ScanRequest` (at most one id, of the collection's `id_type`).
pub fn scan_after(req: &ScanRequest, id_type: IdType) -> Result<Option<PointId>> {
    let mut ids = ids_from_proto(req.after.as_ref(), id_type)?;
    if ids.len() > 1 {
        return Err(Error::invalid(format!("ScanRequest.after holds {} ids, at most one expected", ids.len())));
    }
    Ok(ids.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip() {
        for after in [None, Some(PointId::Int(0)), Some(PointId::Int(u64::MAX >> 1)), Some(PointId::Str("é/x".into()))]
        {
            let p = ScrollPosition { uid: 0xdead_beef_0001, shard: 7, after };
            let t = p.encode();
            assert_eq!(t[0], SCROLL_TOKEN_VERSION);
            assert_eq!(ScrollPosition::decode(&t).unwrap(), p);
        }
    }

    #[test]
    fn bad_tokens_name_the_token() {
        let good = ScrollPosition { uid: 1, shard: 2, after: Some(PointId::Str("abc".into())) }.encode();
        let mut cases = vec![Vec::new(), good[..good.len() - 1].to_vec(), [good.clone(), vec![0]].concat()];
        let mut v2 = good.clone();
        v2[0] = 2;
        cases.push(v2);
        let mut kind = good.clone();
        kind[13] = 9;
        cases.push(kind);
        for t in cases {
            let e = ScrollPosition::decode(&t).unwrap_err().to_string();
            assert!(e.contains("resume_token"), "{e}");
        }
    }

    #[test]
    fn page_round_trip() {
        let recs = vec![
            PointRecord { id: PointId::Int(3), vector: vec![1.0, 2.0], payload: None, version: Default::default() },
            PointRecord {
                id: PointId::Int(9),
                vector: vec![3.0, 4.0],
                payload: serde_json::json!({"a": 1}).as_object().cloned(),
                version: Default::default(),
            },
        ];
        let back = records_from_scroll(scroll_response(recs.clone(), 2, vec![1]), IdType::Int).unwrap();
        assert_eq!(back, recs);
    }
}

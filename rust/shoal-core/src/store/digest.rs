//! The content digest: a per-slot content hash kept at apply time, summed into an order-independent digest
//! of the live points (anti-entropy compares it across replicas).

use serde_json::Value;

use super::snapshot::{put_id, put_version};
use super::{Payload, ShardStore};
use crate::PointId;
use crate::hlc::Version;

impl ShardStore {
    /// Content digest of the live points (id, version, vector, payload of each), maintained at apply time:
    /// O(1), and independent of slot layout, so replicas holding the same points have equal digests however
    /// they got them (log replay, snapshot install, reopen).
    pub fn digest(&self) -> u64 {
        let g = self.inner.read();
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&g.content.to_le_bytes());
        b[8..].copy_from_slice(&(g.ids.len() as u64).to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&b)
    }
}

/// The content hash of a live point: id, version, vector (as stored) and payload, with xxh3. Payload values
/// are hashed structurally (type tags, lengths, object keys in map order), so equal payloads hash equal.
pub(super) fn slot_hash(id: &PointId, version: Version, vector: &[f32], payload: Option<&Payload>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut head = Vec::with_capacity(32);
    put_id(&mut head, id);
    put_version(&mut head, version);
    h.update(&head);
    for x in vector {
        h.update(&x.to_bits().to_le_bytes());
    }
    match payload {
        None => h.update(&[0]),
        Some(p) => {
            h.update(&[1]);
            hash_object(p, &mut h);
        }
    }
    h.digest()
}

fn hash_object(m: &Payload, h: &mut xxhash_rust::xxh3::Xxh3) {
    h.update(&(m.len() as u64).to_le_bytes());
    for (k, v) in m {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        hash_value(v, h);
    }
}

fn hash_value(v: &Value, h: &mut xxhash_rust::xxh3::Xxh3) {
    match v {
        Value::Null => h.update(&[0]),
        Value::Bool(b) => h.update(&[1, u8::from(*b)]),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                h.update(&[2]);
                h.update(&i.to_le_bytes());
            } else if let Some(u) = n.as_u64() {
                h.update(&[3]);
                h.update(&u.to_le_bytes());
            } else {
                h.update(&[4]);
                h.update(&n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
            }
        }
        Value::String(s) => {
            h.update(&[5]);
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        Value::Array(a) => {
            h.update(&[6]);
            h.update(&(a.len() as u64).to_le_bytes());
            for x in a {
                hash_value(x, h);
            }
        }
        Value::Object(m) => {
            h.update(&[7]);
            hash_object(m, h);
        }
    }
}

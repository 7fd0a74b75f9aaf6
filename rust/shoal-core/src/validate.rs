//! Input checks shared by the client and the server (DESIGN §7): every message names the offending item
//! (`vectors[17] contains NaN`, `ids[5] duplicates ids[2] (42)`), and a batch is checked whole before any of
//! it is written. All failures are [`Error::InvalidArgument`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde_json::Value;

use crate::point::MAX_DIM;
use crate::quantizer::{MAX_OVERSAMPLING, Rescore};
use crate::{Error, IdType, PointId, Result};

/// Largest `k` a search may ask for.
pub const MAX_K: i64 = 16_384;
/// Deepest nesting of a payload; the payload object itself is level 1.
pub const MAX_PAYLOAD_DEPTH: usize = 32;

/// Checks a collection dimension: `1..=MAX_DIM`.
pub fn check_dim(dim: usize) -> Result<()> {
    if (1..=MAX_DIM).contains(&dim) {
        Ok(())
    } else {
        Err(Error::invalid(format!("dim must be between 1 and {MAX_DIM}, got {dim}")))
    }
}

/// Checks `n` vectors of `dim` components in row-major `data`: the length, then that every value is finite.
pub fn check_vectors(data: &[f32], dim: usize, n: usize) -> Result<()> {
    if Some(data.len()) != n.checked_mul(dim) {
        return Err(Error::invalid(format!(
            "vectors have {} values but {n} vectors of dim {dim} need {}",
            data.len(),
            n.saturating_mul(dim)
        )));
    }
    if let Some(j) = data.iter().position(|x| !x.is_finite()) {
        let what = if data[j].is_nan() {
            "NaN"
        } else if data[j] > 0.0 {
            "inf"
        } else {
            "-inf"
        };
        return Err(Error::invalid(format!("vectors[{}] contains {what}", j / dim.max(1))));
    }
    Ok(())
}

/// Converts the `i`-th integer id of a request, rejecting negative values.
pub fn int_id(i: usize, v: i64) -> Result<PointId> {
    u64::try_from(v).map(PointId::Int).map_err(|_| Error::invalid(format!("ids[{i}] is negative ({v})")))
}

/// Longest str id, in UTF-8 bytes.
pub const MAX_STR_ID_BYTES: usize = 1024;

/// Checks ids: each of the collection's `id_type`, no empty or over-long string, no duplicates within the
/// batch.
pub fn check_ids(ids: &[PointId], id_type: IdType) -> Result<()> {
    for (i, id) in ids.iter().enumerate() {
        if id.id_type() != id_type {
            return Err(Error::invalid(format!(
                "ids[{i}] is a{} {} but the collection has id_type {:?}",
                if id.id_type() == IdType::Int { "n" } else { "" },
                id.id_type().as_str(),
                id_type.as_str()
            )));
        }
        if let PointId::Str(s) = id {
            if s.is_empty() {
                return Err(Error::invalid(format!("ids[{i}] is an empty string")));
            }
            if s.len() > MAX_STR_ID_BYTES {
                return Err(Error::invalid(format!(
                    "ids[{i}] is {} bytes long: str ids are at most {MAX_STR_ID_BYTES} bytes",
                    s.len()
                )));
            }
        }
    }
    let mut seen: HashMap<&PointId, usize> = HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        match seen.entry(id) {
            Entry::Occupied(e) => {
                return Err(Error::invalid(format!("ids[{i}] duplicates ids[{}] ({id})", e.get())));
            }
            Entry::Vacant(e) => {
                e.insert(i);
            }
        }
    }
    Ok(())
}

/// Checks the `i`-th payload: a JSON object nesting at most [`MAX_PAYLOAD_DEPTH`] levels.
pub fn check_payload(i: usize, v: &Value) -> Result<()> {
    if !v.is_object() {
        return Err(Error::invalid(format!("payloads[{i}] is not a JSON object")));
    }
    if too_deep(v, 1) {
        return Err(Error::invalid(format!("payloads[{i}] nests deeper than {MAX_PAYLOAD_DEPTH} levels")));
    }
    Ok(())
}

/// True when `v` (at nesting `level`) contains a container deeper than the limit. Recursion is bounded by
/// the limit, so adversarial input cannot overflow the stack.
fn too_deep(v: &Value, level: usize) -> bool {
    match v {
        Value::Array(a) => level > MAX_PAYLOAD_DEPTH || a.iter().any(|c| too_deep(c, level + 1)),
        Value::Object(o) => level > MAX_PAYLOAD_DEPTH || o.values().any(|c| too_deep(c, level + 1)),
        _ => false,
    }
}

/// Checks a search `k`: `1..=MAX_K`.
pub fn check_k(k: i64) -> Result<()> {
    if (1..=MAX_K).contains(&k) {
        Ok(())
    } else {
        Err(Error::invalid(format!("k must be between 1 and {MAX_K}, got {k}")))
    }
}

/// Largest search `ef` (beam width): far above any useful value, and well inside u32.
pub const MAX_EF: i64 = 100_000;

/// Checks a search `ef`: `1..=MAX_EF`.
pub fn check_ef(ef: i64) -> Result<()> {
    if (1..=MAX_EF).contains(&ef) {
        Ok(())
    } else {
        Err(Error::invalid(format!("ef must be between 1 and {MAX_EF}, got {ef}")))
    }
}

/// Checks a search's rescoring options as they arrive on the wire (`oversampling` 0 = default) and returns
/// them: `oversampling` must be finite and in `1..=MAX_OVERSAMPLING`.
pub fn check_rescore(rescore: Option<bool>, oversampling: f32) -> Result<Rescore> {
    let mut r = Rescore { enabled: rescore.unwrap_or(true), ..Rescore::default() };
    if oversampling != 0.0 {
        check_oversampling(oversampling)?;
        r.oversampling = oversampling;
    }
    Ok(r)
}

/// Checks an oversampling factor a caller set: finite, `1..=MAX_OVERSAMPLING`.
pub fn check_oversampling(oversampling: f32) -> Result<()> {
    if oversampling.is_finite() && (1.0..=MAX_OVERSAMPLING).contains(&oversampling) {
        Ok(())
    } else {
        Err(Error::invalid(format!("oversampling must be between 1 and {MAX_OVERSAMPLING}, got {oversampling}")))
    }
}

/// Longest timeout a call may ask for, in seconds (about 11.6 days): deadlines stay far from overflowing.
pub const MAX_TIMEOUT_SECS: f64 = 1_000_000.0;

/// Checks a timeout in seconds: positive, finite and at most [`MAX_TIMEOUT_SECS`].
pub fn check_timeout(secs: f64) -> Result<()> {
    if secs > 0.0 && secs <= MAX_TIMEOUT_SECS {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "timeout must be a positive number of seconds up to {MAX_TIMEOUT_SECS}, got {secs}"
        )))
    }
}

/// Checks a whole upsert batch before anything is written: `dim`, the lengths of ids, vectors (`n` rows)
/// and payloads, the vector values, the ids and every payload.
pub fn check_batch(
    ids: &[PointId],
    vectors: &[f32],
    dim: usize,
    n: usize,
    payloads: Option<&[Value]>,
    id_type: IdType,
) -> Result<()> {
    check_dim(dim)?;
    if ids.len() != n {
        return Err(Error::invalid(format!("got {} ids but {n} vectors", ids.len())));
    }
    if let Some(p) = payloads
        && p.len() != ids.len()
    {
        return Err(Error::invalid(format!("got {} ids but {} payloads", ids.len(), p.len())));
    }
    check_vectors(vectors, dim, n)?;
    check_ids(ids, id_type)?;
    if let Some(p) = payloads {
        for (i, v) in p.iter().enumerate() {
            check_payload(i, v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r.unwrap_err() {
            Error::InvalidArgument(m) => m,
            other => panic!("wrong error kind: {other:?}"),
        }
    }

    #[test]
    fn dims() {
        assert!(check_dim(1).is_ok());
        assert!(check_dim(MAX_DIM).is_ok());
        assert_eq!(msg(check_dim(0)), format!("dim must be between 1 and {MAX_DIM}, got 0"));
        assert!(msg(check_dim(MAX_DIM + 1)).contains("65537"));
    }

    #[test]
    fn vectors() {
        let mut v = vec![0.5f32; 20 * 4];
        assert!(check_vectors(&v, 4, 20).is_ok());
        assert!(check_vectors(&[], 4, 0).is_ok());
        assert!(msg(check_vectors(&v[1..], 4, 20)).contains("79 values"));
        v[17 * 4 + 2] = f32::NAN;
        v[18 * 4] = f32::INFINITY;
        assert_eq!(msg(check_vectors(&v, 4, 20)), "vectors[17] contains NaN");
        v[17 * 4 + 2] = 1.0;
        assert_eq!(msg(check_vectors(&v, 4, 20)), "vectors[18] contains inf");
        v[18 * 4] = f32::NEG_INFINITY;
        assert_eq!(msg(check_vectors(&v, 4, 20)), "vectors[18] contains -inf");
        assert!(check_vectors(&[1.0], usize::MAX, 2).is_err());
    }

    #[test]
    fn ids() {
        let ints: Vec<PointId> = [1u64, 2, 3, 42, 5, 42].into_iter().map(PointId::Int).collect();
        assert_eq!(msg(check_ids(&ints, IdType::Int)), "ids[5] duplicates ids[3] (42)");
        assert!(check_ids(&ints[..5], IdType::Int).is_ok());
        assert_eq!(msg(check_ids(&ints, IdType::Str)), r#"ids[0] is an int but the collection has id_type "str""#);
        let strs = vec![PointId::Str("a".into()), PointId::Str("b".into()), PointId::Int(3), PointId::Str("a".into())];
        assert_eq!(msg(check_ids(&strs, IdType::Str)), r#"ids[2] is an int but the collection has id_type "str""#);
        assert_eq!(
            msg(check_ids(&strs[..1].iter().chain(&strs[3..]).cloned().collect::<Vec<_>>(), IdType::Int)),
            r#"ids[0] is a str but the collection has id_type "int""#
        );
        let dup = vec![PointId::Str("a".into()), PointId::Str("a".into())];
        assert_eq!(msg(check_ids(&dup, IdType::Str)), r#"ids[1] duplicates ids[0] ("a")"#);
        let empty = vec![PointId::Str("a".into()), PointId::Str(String::new())];
        assert_eq!(msg(check_ids(&empty, IdType::Str)), "ids[1] is an empty string");
        assert_eq!(int_id(0, 7).unwrap(), PointId::Int(7));
        assert_eq!(msg(int_id(3, -3)), "ids[3] is negative (-3)");
    }

    #[test]
    fn payloads() {
        assert!(check_payload(0, &json!({"a": [1, {"b": null}]})).is_ok());
        assert_eq!(msg(check_payload(4, &json!([1]))), "payloads[4] is not a JSON object");
        assert_eq!(msg(check_payload(4, &json!(null))), "payloads[4] is not a JSON object");
        let mut deep = json!(1);
        for _ in 0..MAX_PAYLOAD_DEPTH {
            deep = json!({ "x": deep });
        }
        assert!(check_payload(0, &deep).is_ok(), "exactly the limit is fine");
        let deeper = json!({ "x": deep });
        assert_eq!(msg(check_payload(4, &deeper)), "payloads[4] nests deeper than 32 levels");
        let mut arr = json!([]);
        for _ in 0..MAX_PAYLOAD_DEPTH {
            arr = json!([arr]);
        }
        assert!(check_payload(1, &json!({ "a": arr })).is_err());
    }

    #[test]
    fn search_params() {
        assert!(check_k(1).is_ok() && check_k(16_384).is_ok());
        assert!(msg(check_k(0)).contains("between 1 and 16384"));
        assert!(check_k(16_385).is_err() && check_k(-1).is_err());
        assert!(check_ef(1).is_ok());
        assert_eq!(msg(check_ef(0)), "ef must be between 1 and 100000, got 0");
        let long = PointId::Str("x".repeat(MAX_STR_ID_BYTES + 1));
        assert!(msg(check_ids(&[long], IdType::Str)).contains("at most 1024 bytes"));
        assert!(check_ef(100_000).is_ok() && check_ef((1 << 32) + 1).is_err());
        assert!(check_timeout(1e6).is_ok() && check_timeout(1e300).is_err());
        assert!(check_timeout(0.5).is_ok());
        assert!(check_timeout(0.0).is_err());
        assert!(check_timeout(-1.0).is_err());
        assert!(check_timeout(f64::NAN).is_err());
        assert!(check_timeout(f64::INFINITY).is_err());
    }

    #[test]
    fn batches() {
        let ids: Vec<PointId> = (0..10).map(PointId::Int).collect();
        let v = vec![0.0f32; 10 * 3];
        let p: Vec<Value> = (0..10).map(|i| json!({ "i": i })).collect();
        assert!(check_batch(&ids, &v, 3, 10, Some(&p), IdType::Int).is_ok());
        assert!(check_batch(&ids, &v, 3, 10, None, IdType::Int).is_ok());
        assert_eq!(msg(check_batch(&ids, &v[..27], 3, 9, None, IdType::Int)), "got 10 ids but 9 vectors");
        assert_eq!(msg(check_batch(&ids, &v, 3, 10, Some(&p[..3]), IdType::Int)), "got 10 ids but 3 payloads");
        assert!(msg(check_batch(&ids, &v, 0, 10, None, IdType::Int)).starts_with("dim"));
        let mut bad = v.clone();
        bad[29] = f32::NAN;
        assert_eq!(msg(check_batch(&ids, &bad, 3, 10, Some(&p), IdType::Int)), "vectors[9] contains NaN");
        let mut badp = p.clone();
        badp[7] = json!("x");
        assert_eq!(msg(check_batch(&ids, &v, 3, 10, Some(&badp), IdType::Int)), "payloads[7] is not a JSON object");
        assert!(msg(check_batch(&ids, &v, 3, 10, None, IdType::Str)).starts_with("ids[0] is an int"));
    }
}

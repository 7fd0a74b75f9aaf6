//! Point ids and payloads on the wire: `PointIds` <-> `Vec<PointId>`, JSON payload text <-> maps.

use serde_json::{Map, Value};
use shoal_core::{IdType, PointId};

use crate::v1::PointIds;
use crate::{Error, Result};

/// Encodes ids (all of one type) as `PointIds`.
pub fn ids_to_proto(ids: &[PointId]) -> PointIds {
    let mut out = PointIds::default();
    for id in ids {
        match id {
            PointId::Int(v) => out.ints.push(*v),
            PointId::Str(s) => out.strs.push(s.clone()),
        }
    }
    out
}

/// Decodes `PointIds` for a collection of `id_type`; a mixed or mistyped list is an error naming it.
pub fn ids_from_proto(ids: Option<&PointIds>, id_type: IdType) -> Result<Vec<PointId>> {
    let Some(ids) = ids else { return Ok(Vec::new()) };
    match id_type {
        IdType::Int => {
            if !ids.strs.is_empty() {
                return Err(Error::invalid(format!(
                    "ids[0] is a str ({:?}) but the collection has id_type \"int\"",
                    ids.strs[0]
                )));
            }
            ids.ints
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v > i64::MAX as u64 {
                        // The wire type is u64; int ids are 0..=i64::MAX (what NumPy's int64 holds).
                        Err(Error::invalid(format!(
                            "ids[{i}] is out of range: {v} (as an int64: {}) is not in 0..={}",
                            v as i64,
                            i64::MAX
                        )))
                    } else {
                        Ok(PointId::Int(v))
                    }
                })
                .collect()
        }
        IdType::Str => {
            if !ids.ints.is_empty() {
                return Err(Error::invalid(format!(
                    "ids[0] is an int ({}) but the collection has id_type \"str\"",
                    ids.ints[0]
                )));
            }
            Ok(ids.strs.iter().cloned().map(PointId::Str).collect())
        }
    }
}

/// Number of ids in a `PointIds`.
pub fn ids_len(ids: Option<&PointIds>) -> usize {
    ids.map_or(0, |p| p.ints.len() + p.strs.len())
}

/// Parses payload texts ("" = none); each must be a JSON object no deeper than 32 levels.
pub fn payloads_from_text(texts: &[String], what: &str) -> Result<Vec<Option<Map<String, Value>>>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() {
                return Ok(None);
            }
            let v: Value =
                serde_json::from_str(t).map_err(|e| Error::invalid(format!("{what}[{i}] is not valid JSON: {e}")))?;
            shoal_core::validate::check_payload(i, &v)
                .map_err(|e| Error::invalid(e.to_string().replacen("payloads", what, 1)))?;
            match v {
                Value::Object(m) => Ok(Some(m)),
                _ => Err(Error::invalid(format!("{what}[{i}] is not a JSON object"))),
            }
        })
        .collect()
}

/// Renders an optional payload as text ("" = none).
pub fn payload_to_text(p: Option<&Map<String, Value>>) -> String {
    p.map_or_else(String::new, |m| serde_json::to_string(m).unwrap_or_default())
}

/// Encodes per-query hit lists as a `SearchResponse` (payloads only when `with_payload`).
pub fn search_response(hits: Vec<Vec<shoal_core::store::Hit>>, with_payload: bool) -> crate::v1::SearchResponse {
    let mut out = crate::v1::SearchResponse::default();
    let mut ids = Vec::with_capacity(hits.iter().map(Vec::len).sum());
    for row in hits {
        out.counts.push(row.len() as u32);
        for h in row {
            out.distances.push(h.distance);
            if with_payload {
                out.payloads.push(payload_to_text(h.payload.as_ref()));
            }
            ids.push(h.id);
        }
    }
    out.ids = Some(ids_to_proto(&ids));
    out
}

/// Decodes a `SearchResponse` back into per-query hit lists.
pub fn hits_from_response(
    resp: &crate::v1::SearchResponse,
    id_type: IdType,
) -> Result<Vec<Vec<shoal_core::store::Hit>>> {
    let ids = ids_from_proto(resp.ids.as_ref(), id_type)?;
    let payloads = payloads_from_text(&resp.payloads, "payloads")?;
    let with_payload = !payloads.is_empty();
    let total: usize = resp.counts.iter().map(|&c| c as usize).sum();
    if ids.len() != total || resp.distances.len() != total || (with_payload && payloads.len() != total) {
        return Err(Error::invalid("SearchResponse: counts, ids, distances and payloads differ in length"));
    }
    let mut ids = ids.into_iter();
    let mut dists = resp.distances.iter();
    let mut payloads = payloads.into_iter();
    Ok(resp
        .counts
        .iter()
        .map(|&c| {
            (0..c)
                .filter_map(|_| {
                    Some(shoal_core::store::Hit {
                        id: ids.next()?,
                        distance: *dists.next()?,
                        payload: if with_payload { payloads.next().flatten() } else { None },
                    })
                })
                .collect()
        })
        .collect())
}

/// Encodes fetched points (in request order, `None` = not found) as a `GetResponse`.
pub fn get_response(records: Vec<Option<shoal_core::store::PointRecord>>, dim: u32) -> crate::v1::GetResponse {
    let mut out = crate::v1::GetResponse { dim, ..Default::default() };
    for rec in records {
        out.found.push(rec.is_some());
        if let Some(rec) = rec {
            out.vectors.extend_from_slice(&rec.vector);
            out.payloads.push(payload_to_text(rec.payload.as_ref()));
        }
    }
    out
}

/// Decodes a `GetResponse` for the requested `ids` (versions are not carried and come back as zero).
pub fn records_from_get(
    resp: crate::v1::GetResponse,
    ids: &[PointId],
) -> Result<Vec<Option<shoal_core::store::PointRecord>>> {
    if resp.found.len() != ids.len() {
        return Err(Error::invalid("GetResponse: one found flag per requested id expected"));
    }
    let found = resp.found.iter().filter(|&&f| f).count();
    let dim = resp.dim as usize;
    let with_vectors = !resp.vectors.is_empty();
    if (with_vectors && resp.vectors.len() != found * dim) || resp.payloads.len() != found {
        return Err(Error::invalid("GetResponse: vectors or payloads do not match the found ids"));
    }
    let payloads = payloads_from_text(&resp.payloads, "payloads")?;
    let mut payloads = payloads.into_iter();
    let mut vectors = resp.vectors.chunks_exact(dim.max(1));
    Ok(ids
        .iter()
        .zip(&resp.found)
        .map(|(id, &f)| {
            f.then(|| shoal_core::store::PointRecord {
                id: id.clone(),
                vector: if with_vectors { vectors.next().map(<[f32]>::to_vec).unwrap_or_default() } else { Vec::new() },
                payload: payloads.next().flatten(),
                version: shoal_core::hlc::Version::default(),
            })
        })
        .collect())
}

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
                        Err(Error::invalid(format!("ids[{i}] is negative ({})", v as i64)))
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

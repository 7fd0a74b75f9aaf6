//! Collection configuration: `CollectionInfo` / `CreateCollectionRequest` <-> `CollectionSpec`.

use shoal_core::payload_index::{IndexKind, MAX_INDEXES, validate_field};
use shoal_core::point::MAX_DIM;
use shoal_core::{IdType, IndexConfig, Metric, Quantization, ShardConfig};

use crate::v1::{self, index_params::Kind};
use crate::{Error, Result};

/// A validated collection definition, as stored in group 0.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionSpec {
    /// Name: 1..=128 chars of `[A-Za-z0-9_.-]`, not starting with `.`.
    pub name: String,
    /// Engine configuration of each shard.
    pub shard: ShardConfig,
    /// Number of hash partitions, >= 1.
    pub shards: u32,
    /// Copies of each shard, >= 1.
    pub replication_factor: u32,
    /// Payload indexes (field, kind), sorted by field, fields unique and valid, at most `MAX_INDEXES`.
    pub payload_indexes: Vec<(String, IndexKind)>,
}

/// Largest replication factor a collection may ask for.
pub const MAX_REPLICATION_FACTOR: u32 = 16;

/// Checks a collection name; the name is used as a directory name.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(Error::invalid(format!("collection name {name:?} must have 1 to 128 characters")));
    }
    if name.starts_with('.') || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(Error::invalid(format!(
            "collection name {name:?} may only contain letters, digits, '_', '-', '.' (not first)"
        )));
    }
    Ok(())
}

fn index_from_proto(p: Option<&v1::IndexParams>) -> Result<IndexConfig> {
    match p.and_then(|p| p.kind.as_ref()) {
        None => Ok(IndexConfig::default()),
        Some(Kind::Flat(_)) => Ok(IndexConfig::Flat),
        Some(Kind::Hnsw(h)) => {
            let m = if h.m == 0 { 16 } else { h.m as usize };
            let ef_construction = if h.ef_construction == 0 { 200 } else { h.ef_construction as usize };
            if !(2..=256).contains(&m) {
                return Err(Error::invalid(format!("index m must be in 2..=256, got {m}")));
            }
            if ef_construction > 10_000 {
                return Err(Error::invalid(format!("index ef_construction must be <= 10000, got {ef_construction}")));
            }
            let quantization = Quantization::parse(&h.quantization).ok_or_else(|| {
                Error::invalid(format!("index quantization must be \"none\" or \"int8\", got {:?}", h.quantization))
            })?;
            Ok(IndexConfig::Hnsw { m, ef_construction, quantization })
        }
    }
}

fn index_to_proto(i: IndexConfig) -> v1::IndexParams {
    v1::IndexParams {
        kind: Some(match i {
            IndexConfig::Flat => Kind::Flat(true),
            IndexConfig::Hnsw { m, ef_construction, quantization } => Kind::Hnsw(v1::HnswParams {
                m: m as u32,
                ef_construction: ef_construction as u32,
                quantization: match quantization {
                    Quantization::None => String::new(),
                    q => q.as_str().to_string(),
                },
            }),
        }),
    }
}

impl CollectionSpec {
    /// Validates a create request; `default_shards` / `default_rf` replace zeros.
    pub fn from_create(req: &v1::CreateCollectionRequest, default_shards: u32, default_rf: u32) -> Result<Self> {
        check_name(&req.name)?;
        let dim = req.dim as usize;
        if dim == 0 || dim > MAX_DIM {
            return Err(Error::invalid(format!("dim must be in 1..={MAX_DIM}, got {dim}")));
        }
        let metric = Metric::parse(if req.metric.is_empty() { "cosine" } else { &req.metric })?;
        let id_type = IdType::parse(if req.id_type.is_empty() { "int" } else { &req.id_type })?;
        let shards = if req.shards == 0 { default_shards } else { req.shards };
        if shards > 1024 {
            return Err(Error::invalid(format!("shards must be in 1..=1024, got {shards}")));
        }
        let replication_factor = if req.replication_factor == 0 { default_rf } else { req.replication_factor };
        if replication_factor > MAX_REPLICATION_FACTOR {
            return Err(Error::invalid(format!(
                "replication_factor must be in 1..={MAX_REPLICATION_FACTOR}, got {replication_factor}"
            )));
        }
        Ok(CollectionSpec {
            name: req.name.clone(),
            shard: ShardConfig {
                dim,
                metric,
                id_type,
                index: index_from_proto(req.index.as_ref())?,
                on_disk: req.on_disk,
            },
            shards,
            replication_factor,
            payload_indexes: Vec::new(),
        })
    }

    /// Decodes a stored or proposed `CollectionInfo`, validated like a create request (it may come from a
    /// peer's MetaPropose or a damaged log: the name becomes a directory, `dim` sizes every vector).
    pub fn from_info(info: &v1::CollectionInfo) -> Result<Self> {
        check_name(&info.name)?;
        let dim = info.dim as usize;
        if dim == 0 || dim > MAX_DIM {
            return Err(Error::invalid(format!("collection {:?}: dim must be in 1..={MAX_DIM}, got {dim}", info.name)));
        }
        if !(1..=1024).contains(&info.shards) {
            return Err(Error::invalid(format!(
                "collection {:?}: shards must be in 1..=1024, got {}",
                info.name, info.shards
            )));
        }
        if !(1..=MAX_REPLICATION_FACTOR).contains(&info.replication_factor) {
            return Err(Error::invalid(format!(
                "collection {:?}: replication_factor must be in 1..={MAX_REPLICATION_FACTOR}, got {}",
                info.name, info.replication_factor
            )));
        }
        Ok(CollectionSpec {
            name: info.name.clone(),
            shard: ShardConfig {
                dim: info.dim as usize,
                metric: Metric::parse(&info.metric)?,
                id_type: IdType::parse(&info.id_type)?,
                index: index_from_proto(info.index.as_ref())?,
                on_disk: info.on_disk,
            },
            shards: info.shards,
            replication_factor: info.replication_factor,
            payload_indexes: payload_indexes_from_proto(&info.name, &info.payload_indexes)?,
        })
    }

    /// The proto form.
    pub fn to_info(&self) -> v1::CollectionInfo {
        v1::CollectionInfo {
            name: self.name.clone(),
            dim: self.shard.dim as u32,
            metric: self.shard.metric.as_str().to_string(),
            id_type: self.shard.id_type.as_str().to_string(),
            shards: self.shards,
            replication_factor: self.replication_factor,
            index: Some(index_to_proto(self.shard.index)),
            payload_indexes: self
                .payload_indexes
                .iter()
                .map(|(f, k)| v1::PayloadIndex { field: f.clone(), kind: k.as_str().to_string() })
                .collect(),
            on_disk: self.shard.on_disk,
        }
    }
}

/// Validates a collection's payload index list: valid fields and kinds, no field twice, at most
/// [`MAX_INDEXES`]. Sorted by field.
fn payload_indexes_from_proto(name: &str, list: &[v1::PayloadIndex]) -> Result<Vec<(String, IndexKind)>> {
    if list.len() > MAX_INDEXES {
        return Err(Error::invalid(format!(
            "collection {name:?}: at most {MAX_INDEXES} payload indexes, got {}",
            list.len()
        )));
    }
    let mut out: Vec<(String, IndexKind)> = Vec::with_capacity(list.len());
    for p in list {
        validate_field(&p.field)?;
        let kind = IndexKind::parse(&p.kind)?;
        if out.iter().any(|(f, _)| f == &p.field) {
            return Err(Error::invalid(format!("collection {name:?}: payload index on {:?} listed twice", p.field)));
        }
        out.push((p.field.clone(), kind));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(dim: u32, metric: &str) -> v1::CreateCollectionRequest {
        v1::CreateCollectionRequest { name: "docs".into(), dim, metric: metric.into(), ..Default::default() }
    }

    #[test]
    fn defaults_and_round_trip() {
        let spec = CollectionSpec::from_create(&req(8, ""), 2, 1).unwrap();
        assert_eq!(spec.shards, 2);
        assert_eq!(spec.shard.metric, Metric::Cosine);
        assert_eq!(spec.shard.index, IndexConfig::default());
        assert_eq!(CollectionSpec::from_info(&spec.to_info()).unwrap(), spec);
    }

    #[test]
    fn payload_index_lists_round_trip_and_bad_ones_are_refused() {
        let mut spec = CollectionSpec::from_create(&req(8, ""), 2, 1).unwrap();
        spec.payload_indexes = vec![("a.b".into(), IndexKind::Keyword), ("n".into(), IndexKind::Integer)];
        assert_eq!(CollectionSpec::from_info(&spec.to_info()).unwrap(), spec);
        let with = |list: Vec<(&str, &str)>| {
            let mut info = spec.to_info();
            info.payload_indexes =
                list.into_iter().map(|(f, k)| v1::PayloadIndex { field: f.into(), kind: k.into() }).collect();
            CollectionSpec::from_info(&info)
        };
        // stored sorted by field, whatever the order received
        assert_eq!(with(vec![("z", "bool"), ("a", "float")]).unwrap().payload_indexes[0].0, "a");
        for (list, why) in [
            (vec![("a", "text")], "unknown payload index kind"),
            (vec![("", "bool")], "1..=256 bytes"),
            (vec![("a.", "bool")], "empty path segment"),
            (vec![("a", "bool"), ("a", "float")], "listed twice"),
        ] {
            let e = with(list).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let many: Vec<(String, String)> = (0..=MAX_INDEXES).map(|i| (format!("f{i}"), "bool".to_string())).collect();
        let e = with(many.iter().map(|(f, k)| (f.as_str(), k.as_str())).collect()).unwrap_err().to_string();
        assert!(e.contains("at most 32"), "{e}");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(CollectionSpec::from_create(&req(0, "l2"), 1, 1).unwrap_err().to_string().contains("dim"));
        assert!(CollectionSpec::from_create(&req(65_537, "l2"), 1, 1).is_err());
        assert!(CollectionSpec::from_create(&req(4, "manhattan"), 1, 1).unwrap_err().to_string().contains("manhattan"));
        assert!(check_name("../etc").is_err());
        assert!(check_name("").is_err());
    }
}

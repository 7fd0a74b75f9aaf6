//! Basic vocabulary of the engine: point ids, metrics, index and shard configuration.

use std::fmt;

use crate::quantizer::Quantization;

/// Largest supported vector dimension.
pub const MAX_DIM: usize = 65_536;

/// Distance metric of a collection. Distances are always smaller-is-better:
/// `l2` = squared euclidean, `cosine` = 1 - cos, `dot` = -dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// 1 - cosine similarity; vectors are stored L2-normalised.
    Cosine,
    /// Squared euclidean distance.
    L2,
    /// Negative inner product.
    Dot,
}

impl Metric {
    /// Every metric's name, as [`Metric::parse`] takes them.
    pub const NAMES: [&'static str; 3] = ["cosine", "l2", "dot"];

    /// Parses `cosine`, `l2` or `dot`.
    pub fn parse(s: &str) -> crate::Result<Self> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "l2" => Ok(Metric::L2),
            "dot" => Ok(Metric::Dot),
            other => Err(crate::Error::invalid(format!(
                "unknown metric {other:?}: expected one of \"cosine\", \"l2\", \"dot\""
            ))),
        }
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Dot => "dot",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of ids a collection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdType {
    /// Non-negative 64-bit integers.
    Int,
    /// UTF-8 strings.
    Str,
}

impl IdType {
    /// Every id type's name, as [`IdType::parse`] takes them.
    pub const NAMES: [&'static str; 2] = ["int", "str"];

    /// Parses `int` or `str`.
    pub fn parse(s: &str) -> crate::Result<Self> {
        match s {
            "int" => Ok(IdType::Int),
            "str" => Ok(IdType::Str),
            other => Err(crate::Error::invalid(format!("unknown id_type {other:?}: expected \"int\" or \"str\""))),
        }
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdType::Int => "int",
            IdType::Str => "str",
        }
    }
}

/// A point id. Integer ids are non-negative (checked at the API boundary).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PointId {
    /// An integer id, `0..=i64::MAX`.
    Int(u64),
    /// A string id.
    Str(String),
}

impl PointId {
    /// The bytes hashed for shard routing: little-endian u64 for ints, UTF-8 for strings.
    pub fn hash_bytes(&self) -> Vec<u8> {
        match self {
            PointId::Int(v) => v.to_le_bytes().to_vec(),
            PointId::Str(s) => s.as_bytes().to_vec(),
        }
    }

    /// The shard owning this id: `xxh3_64(id bytes) % shard_count`.
    pub fn shard(&self, shard_count: u32) -> u32 {
        let h = match self {
            PointId::Int(v) => xxhash_rust::xxh3::xxh3_64(&v.to_le_bytes()),
            PointId::Str(s) => xxhash_rust::xxh3::xxh3_64(s.as_bytes()),
        };
        (h % u64::from(shard_count.max(1))) as u32
    }

    /// The id type of this id.
    pub fn id_type(&self) -> IdType {
        match self {
            PointId::Int(_) => IdType::Int,
            PointId::Str(_) => IdType::Str,
        }
    }
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Int(v) => write!(f, "{v}"),
            PointId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Index configuration of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexConfig {
    /// Exact search only.
    Flat,
    /// HNSW graph: `m` links per node (2*m on layer 0), `ef_construction` beam width while building.
    Hnsw {
        /// Links per node on upper layers; at least 2.
        m: usize,
        /// Beam width while inserting; at least 1.
        ef_construction: usize,
        /// How traversal scores candidates (int8 codes, rescored with the float vectors, or floats only).
        quantization: Quantization,
    },
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig::Hnsw { m: 16, ef_construction: 200, quantization: Quantization::None }
    }
}

impl IndexConfig {
    /// The quantization of the vectors (`None` for a flat index).
    pub fn quantization(&self) -> Quantization {
        match self {
            IndexConfig::Flat => Quantization::None,
            IndexConfig::Hnsw { quantization, .. } => *quantization,
        }
    }
}

/// Everything a shard store needs to know about its collection.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardConfig {
    /// Vector dimension, `1..=MAX_DIM`.
    pub dim: usize,
    /// Distance metric.
    pub metric: Metric,
    /// Id type of the collection.
    pub id_type: IdType,
    /// Index used for search.
    pub index: IndexConfig,
    /// Full-precision vectors memory-mapped from a scratch file in the shard's directory instead of held on
    /// the heap (see `arena`); results are the same either way.
    pub on_disk: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_routing_is_stable() {
        // xxh3_64 of 8 little-endian bytes is specified; these values must never change.
        let a = PointId::Int(42).shard(6);
        let b = PointId::Int(42).shard(6);
        assert_eq!(a, b);
        assert!(a < 6);
        assert_eq!(PointId::Str("x".into()).shard(1), 0);
    }

    #[test]
    fn listed_names_are_exactly_the_parsed_ones() {
        for n in Metric::NAMES {
            assert_eq!(Metric::parse(n).unwrap().as_str(), n);
        }
        for n in IdType::NAMES {
            assert_eq!(IdType::parse(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn metric_parse_rejects_unknown() {
        assert!(Metric::parse("hamming").unwrap_err().to_string().contains("hamming"));
        assert_eq!(Metric::parse("l2").unwrap(), Metric::L2);
    }
}

//! Payload indexes: per-field inverted lists over a shard's slots, so that filters on indexed fields are
//! answered exactly without walking any JSON (DESIGN §8).
//!
//! A [`FieldIndex`] maps each value of one payload field (a dotted path, as in filters) to the set of slots
//! holding it: strings for `keyword`, numbers for `integer` and `float` (keyed by value, so `1 == 1.0` as in
//! filters), `true`/`false` for `bool`. An array field is indexed by each of its elements (filters match an
//! array when any element does). Values of another type are not indexed: a filter whose operand has another
//! type than the index falls back to evaluating the filter on each point.
//!
//! Indexes are built in steps over the slots (see [`FieldIndex::built`]) so a large shard never holds the
//! store's write lock for long; until a build reaches the last slot the index answers nothing. Slots are
//! append-only in the store, so a build never misses a slot: the store keeps every slot below `built` up to
//! date at apply time, and the build covers the rest.

use std::collections::BTreeMap;
use std::ops::Bound;

use roaring::{MultiOps, RoaringBitmap};
use serde_json::{Map, Number, Value};

use crate::{Error, Result};

/// What a payload index holds, named as in the API (`keyword`, `integer`, `float`, `bool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexKind {
    /// Strings: equality, `$in`, and byte-wise ranges.
    Keyword,
    /// Numbers (meant for integers): equality, `$in`, ranges.
    Integer,
    /// Numbers: equality, `$in`, ranges.
    Float,
    /// Booleans: equality.
    Bool,
}

impl IndexKind {
    /// The API name.
    pub fn as_str(&self) -> &'static str {
        match self {
            IndexKind::Keyword => "keyword",
            IndexKind::Integer => "integer",
            IndexKind::Float => "float",
            IndexKind::Bool => "bool",
        }
    }

    /// Parses an API name; the error lists the kinds.
    pub fn parse(s: &str) -> Result<IndexKind> {
        match s {
            "keyword" => Ok(IndexKind::Keyword),
            "integer" => Ok(IndexKind::Integer),
            "float" => Ok(IndexKind::Float),
            "bool" => Ok(IndexKind::Bool),
            other => Err(Error::invalid(format!(
                "unknown payload index kind {other:?}: expected \"keyword\", \"integer\", \"float\" or \"bool\""
            ))),
        }
    }
}

/// Longest field path an index accepts, in bytes.
pub const MAX_FIELD_LEN: usize = 256;
/// Most payload indexes one collection may have.
pub const MAX_INDEXES: usize = 32;

/// Checks a field path for an index: non-empty dotted segments, at most [`MAX_FIELD_LEN`] bytes.
pub fn validate_field(field: &str) -> Result<()> {
    if field.is_empty() || field.len() > MAX_FIELD_LEN {
        return Err(Error::invalid(format!(
            "payload index field must be 1..={MAX_FIELD_LEN} bytes, got {} bytes",
            field.len()
        )));
    }
    if field.split('.').any(str::is_empty) {
        return Err(Error::invalid(format!("payload index field {field:?} has an empty path segment")));
    }
    Ok(())
}

/// A number as an ordered key: f64 bits mapped so that unsigned order is numeric order (`-0.0` as `0.0`).
/// `None` when the number is not exactly an f64 (an integer beyond 2^53): such values make the index lossy.
pub(crate) fn num_key(n: &Number) -> Option<u64> {
    let f = if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > (1u64 << 53) {
            return None;
        }
        i as f64
    } else if let Some(u) = n.as_u64() {
        if u > (1u64 << 53) {
            return None;
        }
        u as f64
    } else {
        n.as_f64()?
    };
    let f = if f == 0.0 { 0.0 } else { f };
    let b = f.to_bits();
    Some(if b >> 63 == 1 { !b } else { b | (1 << 63) })
}

/// The inverted lists of one field.
#[derive(Debug, Clone)]
enum Postings {
    /// String value -> slots.
    Keyword(BTreeMap<String, RoaringBitmap>),
    /// Number key ([`num_key`]) -> slots.
    Number(BTreeMap<u64, RoaringBitmap>),
    /// `[false, true]` -> slots.
    Bool([RoaringBitmap; 2]),
}

/// The index of one payload field.
#[derive(Debug, Clone)]
pub struct FieldIndex {
    /// The field path as given (dotted).
    field: String,
    /// Its segments.
    parts: Vec<String>,
    /// The kind; fixes which `Postings` variant is used.
    kind: IndexKind,
    /// The lists; they hold exactly the live slots below `built` whose field has a value of this kind.
    postings: Postings,
    /// Slots below this one are indexed (the build's progress); the index answers once it reaches the
    /// store's slot count.
    built: usize,
    /// Values of this kind that could not be keyed exactly (integers beyond 2^53) were seen: the index then
    /// never answers (filters are evaluated on each point instead). Never cleared.
    lossy: bool,
}

impl FieldIndex {
    /// An empty index of `field` (not yet built over any slot).
    pub fn new(field: &str, kind: IndexKind) -> FieldIndex {
        let postings = match kind {
            IndexKind::Keyword => Postings::Keyword(BTreeMap::new()),
            IndexKind::Integer | IndexKind::Float => Postings::Number(BTreeMap::new()),
            IndexKind::Bool => Postings::Bool([RoaringBitmap::new(), RoaringBitmap::new()]),
        };
        FieldIndex {
            field: field.to_string(),
            parts: field.split('.').map(str::to_string).collect(),
            kind,
            postings,
            built: 0,
            lossy: false,
        }
    }

    /// The field path.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The kind.
    pub fn kind(&self) -> IndexKind {
        self.kind
    }

    /// Slots indexed so far.
    pub fn built(&self) -> usize {
        self.built
    }

    /// Marks slots below `upto` as covered (the caller indexed them with [`FieldIndex::add`]).
    pub fn set_built(&mut self, upto: usize) {
        self.built = self.built.max(upto);
    }

    /// Distinct values indexed.
    pub fn values(&self) -> usize {
        match &self.postings {
            Postings::Keyword(m) => m.len(),
            Postings::Number(m) => m.len(),
            Postings::Bool(b) => b.iter().filter(|x| !x.is_empty()).count(),
        }
    }

    /// Whether the index can answer filters: built over all `slots` and not lossy.
    pub fn usable(&self, slots: usize) -> bool {
        self.built >= slots && !self.lossy
    }

    fn each_value(&self, payload: &Map<String, Value>, mut f: impl FnMut(&Value)) {
        match crate::filter::lookup(payload, &self.parts) {
            Some(Value::Array(a)) => a.iter().for_each(f),
            Some(v) => f(v),
            None => {}
        }
    }

    /// Indexes `slot` holding `payload` (a live point's).
    pub fn add(&mut self, slot: u32, payload: &Map<String, Value>) {
        let mut lossy = false;
        let mut postings = std::mem::replace(&mut self.postings, Postings::Bool(Default::default()));
        self.each_value(payload, |v| match (&mut postings, v) {
            (Postings::Keyword(m), Value::String(s)) => {
                if let Some(b) = m.get_mut(s.as_str()) {
                    b.insert(slot);
                } else {
                    m.insert(s.clone(), std::iter::once(slot).collect());
                }
            }
            (Postings::Number(m), Value::Number(n)) => match num_key(n) {
                Some(k) => {
                    m.entry(k).or_default().insert(slot);
                }
                None => lossy = true,
            },
            (Postings::Bool(b), Value::Bool(x)) => {
                b[*x as usize].insert(slot);
            }
            _ => {}
        });
        self.postings = postings;
        self.lossy |= lossy;
    }

    /// Removes `slot`, which held `payload`, from the lists.
    pub fn remove(&mut self, slot: u32, payload: &Map<String, Value>) {
        let mut postings = std::mem::replace(&mut self.postings, Postings::Bool(Default::default()));
        self.each_value(payload, |v| match (&mut postings, v) {
            (Postings::Keyword(m), Value::String(s)) => {
                if let Some(b) = m.get_mut(s.as_str()) {
                    b.remove(slot);
                    if b.is_empty() {
                        m.remove(s.as_str());
                    }
                }
            }
            (Postings::Number(m), Value::Number(n)) => {
                if let Some(k) = num_key(n)
                    && let Some(b) = m.get_mut(&k)
                {
                    b.remove(slot);
                    if b.is_empty() {
                        m.remove(&k);
                    }
                }
            }
            (Postings::Bool(b), Value::Bool(x)) => {
                b[*x as usize].remove(slot);
            }
            _ => {}
        });
        self.postings = postings;
    }

    /// Slots whose field equals `x` (or holds it as an element); `None` when `x` has another type than
    /// the index (the filter is then evaluated per point).
    pub(crate) fn eq(&self, x: &Value) -> Option<RoaringBitmap> {
        match (&self.postings, x) {
            (Postings::Keyword(m), Value::String(s)) => Some(m.get(s.as_str()).cloned().unwrap_or_default()),
            (Postings::Number(m), Value::Number(n)) => Some(m.get(&num_key(n)?).cloned().unwrap_or_default()),
            (Postings::Bool(b), Value::Bool(v)) => Some(b[*v as usize].clone()),
            _ => None,
        }
    }

    /// Slots whose field (or an element of it) is in the range; `lo`/`hi` are operands of the index's type.
    pub(crate) fn range(&self, lo: Bound<&Value>, hi: Bound<&Value>) -> Option<RoaringBitmap> {
        fn map_bound<T>(b: Bound<&Value>, f: impl Fn(&Value) -> Option<T>) -> Option<Bound<T>> {
            Some(match b {
                Bound::Included(v) => Bound::Included(f(v)?),
                Bound::Excluded(v) => Bound::Excluded(f(v)?),
                Bound::Unbounded => Bound::Unbounded,
            })
        }
        // One multi-way union: folding `|=` over many small lists re-merges the growing result every time.
        match &self.postings {
            Postings::Keyword(m) => {
                let s = |v: &Value| v.as_str().map(str::to_string);
                let (lo, hi) = (map_bound(lo, s)?, map_bound(hi, s)?);
                if bounds_empty(&lo, &hi) {
                    return Some(RoaringBitmap::new());
                }
                Some(m.range::<String, _>((lo, hi)).map(|(_, b)| b).union())
            }
            Postings::Number(m) => {
                let n = |v: &Value| match v {
                    Value::Number(n) => num_key(n),
                    _ => None,
                };
                let (lo, hi) = (map_bound(lo, n)?, map_bound(hi, n)?);
                if bounds_empty(&lo, &hi) {
                    return Some(RoaringBitmap::new());
                }
                Some(m.range((lo, hi)).map(|(_, b)| b).union())
            }
            Postings::Bool(_) => None,
        }
    }
}

/// Whether a range is empty (or inverted, which `BTreeMap::range` would panic on).
fn bounds_empty<T: Ord>(lo: &Bound<T>, hi: &Bound<T>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

/// The payload indexes of one shard replica, by field.
#[derive(Debug, Clone, Default)]
pub struct PayloadIndexes {
    /// Field path -> its index; at most [`MAX_INDEXES`].
    fields: BTreeMap<String, FieldIndex>,
}

impl PayloadIndexes {
    /// The index of `field`, if any.
    pub fn get(&self, field: &str) -> Option<&FieldIndex> {
        self.fields.get(field)
    }

    /// All indexes, by field.
    pub fn iter(&self) -> impl Iterator<Item = &FieldIndex> {
        self.fields.values()
    }

    /// Mutable access for builds.
    pub fn get_mut(&mut self, field: &str) -> Option<&mut FieldIndex> {
        self.fields.get_mut(field)
    }

    /// Whether there is no index.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Makes the set of indexes exactly `wanted` (field, kind): keeps those already there with the same
    /// kind, drops the others, adds new empty (unbuilt) ones. Returns whether anything changed.
    pub fn set(&mut self, wanted: &[(String, IndexKind)]) -> bool {
        let before: Vec<(String, IndexKind)> = self.fields.values().map(|f| (f.field.clone(), f.kind)).collect();
        self.fields.retain(|f, ix| wanted.iter().any(|(w, k)| w == f && *k == ix.kind));
        for (f, k) in wanted {
            self.fields.entry(f.clone()).or_insert_with(|| FieldIndex::new(f, *k));
        }
        let after: Vec<(String, IndexKind)> = self.fields.values().map(|f| (f.field.clone(), f.kind)).collect();
        before != after
    }

    /// A slot was appended for a live point with `payload`: every index already past it takes it, and a
    /// built index's edge moves past it (so a built index stays built).
    pub fn on_add(&mut self, slot: u32, payload: Option<&Map<String, Value>>) {
        for ix in self.fields.values_mut() {
            if (slot as usize) <= ix.built {
                if let Some(p) = payload {
                    ix.add(slot, p);
                }
                if slot as usize == ix.built {
                    ix.built += 1;
                }
            }
        }
    }

    /// `slot`'s payload changed to `payload` (after [`PayloadIndexes::on_remove`] of the old one): every
    /// index that covers it indexes the new one.
    pub fn on_readd(&mut self, slot: u32, payload: Option<&Map<String, Value>>) {
        let Some(p) = payload else { return };
        for ix in self.fields.values_mut() {
            if (slot as usize) < ix.built {
                ix.add(slot, p);
            }
        }
    }

    /// `slot` (which held `payload`) died or changed payload: every index that covers it forgets it.
    pub fn on_remove(&mut self, slot: u32, payload: Option<&Map<String, Value>>) {
        let Some(p) = payload else { return };
        for ix in self.fields.values_mut() {
            if (slot as usize) < ix.built {
                ix.remove(slot, p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn number_keys_order_like_numbers() {
        let k = |v: Value| num_key(v.as_number().unwrap()).unwrap();
        let xs = [json!(-1e300), json!(-3), json!(-0.5), json!(0), json!(-0.0), json!(1), json!(1.5), json!(1e20)];
        for w in xs.windows(2) {
            assert!(k(w[0].clone()) <= k(w[1].clone()), "{} <= {}", w[0], w[1]);
        }
        assert_eq!(k(json!(0)), k(json!(-0.0)));
        assert_eq!(k(json!(2)), k(json!(2.0)));
        assert!(num_key(json!(9007199254740993u64).as_number().unwrap()).is_none(), "beyond 2^53: lossy");
    }

    #[test]
    fn keyword_lists_follow_adds_and_removes_and_arrays() {
        let mut ix = FieldIndex::new("meta.lang", IndexKind::Keyword);
        ix.add(0, &obj(json!({"meta": {"lang": "en"}})));
        ix.add(1, &obj(json!({"meta": {"lang": ["en", "fr"]}})));
        ix.add(2, &obj(json!({"meta": {"lang": 5}})));
        ix.add(3, &obj(json!({"other": 1})));
        ix.set_built(4);
        assert!(ix.usable(4) && !ix.usable(5));
        assert_eq!(ix.eq(&json!("en")).unwrap().iter().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(ix.eq(&json!("fr")).unwrap().iter().collect::<Vec<_>>(), vec![1]);
        assert!(ix.eq(&json!(5)).is_none(), "another type: not answered");
        let r = ix.range(Bound::Excluded(&json!("en")), Bound::Unbounded).unwrap();
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![1]);
        ix.remove(1, &obj(json!({"meta": {"lang": ["en", "fr"]}})));
        assert_eq!(ix.eq(&json!("en")).unwrap().iter().collect::<Vec<_>>(), vec![0]);
        assert_eq!(ix.values(), 1, "emptied lists are dropped");
        // an inverted range is empty, not a panic
        assert!(ix.range(Bound::Included(&json!("z")), Bound::Included(&json!("a"))).unwrap().is_empty());
    }

    #[test]
    fn numbers_and_bools() {
        let mut ix = FieldIndex::new("year", IndexKind::Integer);
        for (s, y) in [(0u32, json!(2001)), (1, json!(2010)), (2, json!(2010.0)), (3, json!(2020))] {
            ix.add(s, &obj(json!({ "year": y })));
        }
        ix.set_built(4);
        assert_eq!(ix.eq(&json!(2010)).unwrap().len(), 2);
        let r = ix.range(Bound::Included(&json!(2010)), Bound::Excluded(&json!(2020))).unwrap();
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![1, 2]);
        ix.add(4, &obj(json!({"year": 9007199254740993u64})));
        assert!(!ix.usable(5), "a value the index cannot key makes it lossy");
        let mut b = FieldIndex::new("ok", IndexKind::Bool);
        b.add(0, &obj(json!({"ok": true})));
        b.add(1, &obj(json!({"ok": false})));
        b.set_built(2);
        assert_eq!(b.eq(&json!(true)).unwrap().iter().collect::<Vec<_>>(), vec![0]);
        assert!(b.range(Bound::Unbounded, Bound::Unbounded).is_none());
    }

    #[test]
    fn the_set_follows_the_wanted_list_and_builds_track_appends() {
        let mut p = PayloadIndexes::default();
        assert!(p.set(&[("a".into(), IndexKind::Keyword), ("b".into(), IndexKind::Bool)]));
        assert!(!p.set(&[("a".into(), IndexKind::Keyword), ("b".into(), IndexKind::Bool)]));
        // a built index stays built as slots are appended
        p.get_mut("a").unwrap().set_built(0);
        p.on_add(0, Some(&obj(json!({"a": "x"}))));
        p.on_add(1, None);
        p.on_add(2, Some(&obj(json!({"a": "x"}))));
        assert!(p.get("a").unwrap().usable(3));
        assert_eq!(p.get("a").unwrap().eq(&json!("x")).unwrap().len(), 2);
        p.on_remove(0, Some(&obj(json!({"a": "x"}))));
        assert_eq!(p.get("a").unwrap().eq(&json!("x")).unwrap().len(), 1);
        // a kind change replaces the index
        assert!(p.set(&[("a".into(), IndexKind::Integer)]));
        assert_eq!(p.get("a").unwrap().kind(), IndexKind::Integer);
        assert!(p.get("b").is_none());
        assert_eq!(IndexKind::parse("float").unwrap(), IndexKind::Float);
        assert!(IndexKind::parse("text").unwrap_err().to_string().contains("\"keyword\""));
        assert!(validate_field("a..b").is_err() && validate_field("").is_err() && validate_field("a.b").is_ok());
    }
}

//! Payload filters in the Mongo/Chroma style (DESIGN §8), parsed once and evaluated per point.
//!
//! Syntax (a filter is a JSON object):
//! - `{"lang": "en"}`: equality by value; several keys in one object are ANDed.
//! - `{"year": {"$gte": 2020, "$lt": 2024}}`: operators `$eq $ne $gt $gte $lt $lte $in $nin $exists`;
//!   several operators on one field are ANDed. A field may also take `{"$not": {<operators>}}`.
//! - `{"$and": [f, ...]}`, `{"$or": [f, ...]}` (non-empty arrays of filters), `{"$not": f}`.
//! - `"meta.author.name"`: dotted paths walk nested objects; a numeric segment also indexes an array
//!   (`"tags.0"`). Paths are split once, at parse time.
//!
//! Semantics (Mongo's, where they differ from the obvious):
//! - Numbers compare numerically whatever their JSON form (`1 == 1.0`, `2 < 2.5`); strings compare
//!   byte-wise lexicographically; comparing a number with a string (or anything across types) is false.
//!   `$gt/$gte/$lt/$lte` accept only a number or a string operand.
//! - Equality to an array or object is exact (deep) equality. A field whose value is an array also matches
//!   `$eq x` / `$in` / a range operator when *any element* does (`{"tags": "ml"}` matches `["ml", "ai"]`).
//! - `$eq null` (and `null` in `$in`) matches a field that is null *or missing*.
//! - `$ne` and `$nin` are the exact negations of `$eq` and `$in`: they match when the field is missing, and
//!   an array field matches `$ne x` only when no element equals `x`.
//! - `$exists: true` matches any present field, including one whose value is null.
//! - An empty filter `{}` matches every point.
//!
//! Errors are [`Error::InvalidArgument`] naming the offending part, e.g.
//! `filter: unknown operator "$foo" at "year"` or `filter: $in at "tags" expects an array`.

use std::cmp::Ordering;

use std::ops::Bound;

use roaring::{MultiOps, RoaringBitmap};
use serde_json::{Map, Number, Value};

use crate::payload_index::PayloadIndexes;
use crate::{Error, Result};

/// A parsed filter over JSON payloads. Cheap to evaluate; immutable and `Send + Sync`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The filter tree; an empty `And` matches everything.
    root: Node,
}

/// One node of the filter tree.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Every child matches (empty: true).
    And(Vec<Node>),
    /// At least one child matches (never empty after parsing).
    Or(Vec<Node>),
    /// The child does not match.
    Not(Box<Node>),
    /// A predicate on the value found at `path`.
    Field(Path, Pred),
}

/// A dotted field path, split at parse time.
#[derive(Debug, Clone, PartialEq)]
struct Path {
    /// The path as written, for messages.
    text: String,
    /// Non-empty segments, in order.
    parts: Box<[String]>,
}

/// A predicate on one field's value (`None` = missing).
#[derive(Debug, Clone, PartialEq)]
enum Pred {
    /// Deep equality (any element of an array field; null matches missing).
    Eq(Value),
    /// Negation of `Eq`.
    Ne(Value),
    /// Ordered comparison; operand is a number or a string.
    Cmp(CmpOp, Value),
    /// `Eq` to any listed value.
    In(Vec<Value>),
    /// Negation of `In`.
    Nin(Vec<Value>),
    /// Field presence equals the flag.
    Exists(bool),
}

/// An ordered comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

fn err(msg: String) -> Error {
    Error::invalid(format!("filter: {msg}"))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Filter {
    /// Parses a filter. The top level must be a JSON object.
    pub fn parse(v: &Value) -> Result<Filter> {
        match v {
            Value::Object(m) => Ok(Filter { root: parse_object(m)? }),
            other => Err(err(format!("expected a JSON object at the top level, got {}", type_name(other)))),
        }
    }

    /// Parses a filter from JSON text.
    pub fn parse_str(s: &str) -> Result<Filter> {
        let v: Value = serde_json::from_str(s).map_err(|e| err(format!("invalid JSON: {e}")))?;
        Filter::parse(&v)
    }

    /// A filter matching every point.
    pub fn match_all() -> Filter {
        Filter { root: Node::And(Vec::new()) }
    }

    /// True when this filter matches every payload (`{}`).
    pub fn is_match_all(&self) -> bool {
        matches!(&self.root, Node::And(v) if v.is_empty())
    }

    /// Whether `payload` satisfies the filter.
    pub fn matches(&self, payload: &Map<String, Value>) -> bool {
        eval(&self.root, payload)
    }

    /// The slots matching this filter as far as the payload indexes in `ix` can tell, or `None` when no
    /// part of it is indexed. `all` is every live slot (for negations); `slots` the store's slot count (an
    /// index answers only once built over all of them). An [`IndexAnswer`] that is not `exact` is a superset:
    /// the filter must still be evaluated on its slots. `all` is called at most once, for a negation.
    pub fn answer(&self, ix: &PayloadIndexes, slots: usize, all: &dyn Fn() -> RoaringBitmap) -> Option<IndexAnswer> {
        if ix.is_empty() {
            return None;
        }
        let all = Universe { make: all, cell: std::cell::OnceCell::new() };
        answer_node(&self.root, ix, slots, &all)
    }
}

/// What payload indexes say about a filter (see [`Filter::answer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexAnswer {
    /// Live slots that may match (exactly those that match when `exact`).
    pub slots: RoaringBitmap,
    /// Whether `slots` is exact (no per-point evaluation needed).
    pub exact: bool,
}

/// Every live slot, computed on first use.
struct Universe<'a> {
    make: &'a dyn Fn() -> RoaringBitmap,
    cell: std::cell::OnceCell<RoaringBitmap>,
}

impl Universe<'_> {
    fn get(&self) -> &RoaringBitmap {
        self.cell.get_or_init(self.make)
    }
}

fn answer_node(n: &Node, ix: &PayloadIndexes, slots: usize, all: &Universe<'_>) -> Option<IndexAnswer> {
    match n {
        Node::And(children) => {
            let mut acc: Option<IndexAnswer> = None;
            let mut exact = true;
            for c in children {
                match answer_node(c, ix, slots, all) {
                    Some(a) => {
                        exact &= a.exact;
                        acc = Some(match acc {
                            Some(mut x) => {
                                x.slots &= &a.slots;
                                x
                            }
                            None => a,
                        });
                    }
                    None => exact = false,
                }
            }
            acc.map(|a| IndexAnswer { slots: a.slots, exact })
        }
        Node::Or(children) => {
            let mut out = RoaringBitmap::new();
            let mut exact = true;
            for c in children {
                let a = answer_node(c, ix, slots, all)?;
                exact &= a.exact;
                out |= a.slots;
            }
            Some(IndexAnswer { slots: out, exact })
        }
        Node::Not(c) => {
            let a = answer_node(c, ix, slots, all).filter(|a| a.exact)?;
            Some(IndexAnswer { slots: all.get() - a.slots, exact: true })
        }
        Node::Field(path, pred) => {
            let fi = ix.get(&path.text).filter(|f| f.usable(slots))?;
            let bits = match pred {
                Pred::Eq(x) => fi.eq(x)?,
                Pred::Ne(x) => all.get() - fi.eq(x)?,
                Pred::In(xs) => xs.iter().map(|x| fi.eq(x)).collect::<Option<Vec<_>>>()?.union(),
                Pred::Nin(xs) => all.get() - xs.iter().map(|x| fi.eq(x)).collect::<Option<Vec<_>>>()?.union(),
                Pred::Cmp(op, x) => {
                    let (lo, hi) = match op {
                        CmpOp::Gt => (Bound::Excluded(x), Bound::Unbounded),
                        CmpOp::Gte => (Bound::Included(x), Bound::Unbounded),
                        CmpOp::Lt => (Bound::Unbounded, Bound::Excluded(x)),
                        CmpOp::Lte => (Bound::Unbounded, Bound::Included(x)),
                    };
                    fi.range(lo, hi)?
                }
                Pred::Exists(_) => return None,
            };
            // The lists hold only live slots; `all` bounds the negations.
            Some(IndexAnswer { slots: bits, exact: true })
        }
    }
}

fn parse_object(m: &Map<String, Value>) -> Result<Node> {
    let mut all = Vec::with_capacity(m.len());
    for (k, v) in m {
        match k.as_str() {
            "$and" | "$or" => {
                let arr = match v {
                    Value::Array(a) if !a.is_empty() => a,
                    _ => return Err(err(format!("{k} expects a non-empty array of filters"))),
                };
                let mut children = Vec::with_capacity(arr.len());
                for (i, f) in arr.iter().enumerate() {
                    match f {
                        Value::Object(o) => children.push(parse_object(o)?),
                        other => {
                            return Err(err(format!("{k}[{i}] must be a filter object, got {}", type_name(other))));
                        }
                    }
                }
                all.push(if k == "$and" { Node::And(children) } else { Node::Or(children) });
            }
            "$not" => match v {
                Value::Object(o) => all.push(Node::Not(Box::new(parse_object(o)?))),
                other => {
                    return Err(err(format!("$not expects a filter object, got {}", type_name(other))));
                }
            },
            op if op.starts_with('$') => {
                return Err(err(format!(
                    "unknown top-level operator {op:?} (expected a field name, \"$and\", \"$or\" or \"$not\")"
                )));
            }
            field => {
                let path = parse_path(field)?;
                all.push(parse_condition(path, v)?);
            }
        }
    }
    Ok(if all.len() == 1 { all.pop().expect("one element") } else { Node::And(all) })
}

fn parse_path(field: &str) -> Result<Path> {
    if field.is_empty() || field.split('.').any(str::is_empty) {
        return Err(err(format!("invalid field path {field:?}")));
    }
    Ok(Path { text: field.to_owned(), parts: field.split('.').map(str::to_owned).collect() })
}

/// Parses the value given for a field: an operator object, or a plain value meaning equality.
fn parse_condition(path: Path, v: &Value) -> Result<Node> {
    let ops = match v {
        Value::Object(o) if o.keys().any(|k| k.starts_with('$')) => o,
        _ => return Ok(Node::Field(path, Pred::Eq(v.clone()))),
    };
    if let Some(k) = ops.keys().find(|k| !k.starts_with('$')) {
        return Err(err(format!("at {:?}: cannot mix operators and the plain key {k:?} in one object", path.text)));
    }
    let mut preds = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        let p = &path.text;
        let pred = match op.as_str() {
            "$eq" => Pred::Eq(arg.clone()),
            "$ne" => Pred::Ne(arg.clone()),
            "$gt" | "$gte" | "$lt" | "$lte" => {
                if !matches!(arg, Value::Number(_) | Value::String(_)) {
                    return Err(err(format!("{op} at {p:?} expects a number or a string, got {}", type_name(arg))));
                }
                let c = match op.as_str() {
                    "$gt" => CmpOp::Gt,
                    "$gte" => CmpOp::Gte,
                    "$lt" => CmpOp::Lt,
                    _ => CmpOp::Lte,
                };
                Pred::Cmp(c, arg.clone())
            }
            "$in" | "$nin" => {
                let list = match arg {
                    Value::Array(a) => a.clone(),
                    other => {
                        return Err(err(format!("{op} at {p:?} expects an array, got {}", type_name(other))));
                    }
                };
                if op == "$in" { Pred::In(list) } else { Pred::Nin(list) }
            }
            "$exists" => match arg {
                Value::Bool(b) => Pred::Exists(*b),
                other => {
                    return Err(err(format!("$exists at {p:?} expects true or false, got {}", type_name(other))));
                }
            },
            "$not" => {
                let inner = match arg {
                    Value::Object(o) if !o.is_empty() && o.keys().all(|k| k.starts_with('$')) => arg,
                    _ => return Err(err(format!("$not at {p:?} expects an object of operators"))),
                };
                preds.push(Node::Not(Box::new(parse_condition(path.clone(), inner)?)));
                continue;
            }
            other => return Err(err(format!("unknown operator {other:?} at {p:?}"))),
        };
        preds.push(Node::Field(path.clone(), pred));
    }
    Ok(if preds.len() == 1 { preds.pop().expect("one element") } else { Node::And(preds) })
}

fn eval(node: &Node, payload: &Map<String, Value>) -> bool {
    match node {
        Node::And(c) => c.iter().all(|n| eval(n, payload)),
        Node::Or(c) => c.iter().any(|n| eval(n, payload)),
        Node::Not(c) => !eval(c, payload),
        Node::Field(path, pred) => eval_pred(pred, lookup(payload, &path.parts)),
    }
}

/// The value at `parts`, walking objects by key and arrays by numeric index.
pub(crate) fn lookup<'a>(payload: &'a Map<String, Value>, parts: &[String]) -> Option<&'a Value> {
    let (first, rest) = parts.split_first()?;
    let mut cur = payload.get(first)?;
    for p in rest {
        cur = match cur {
            Value::Object(o) => o.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn eval_pred(pred: &Pred, v: Option<&Value>) -> bool {
    match pred {
        Pred::Eq(x) => eq_match(v, x),
        Pred::Ne(x) => !eq_match(v, x),
        Pred::In(xs) => xs.iter().any(|x| eq_match(v, x)),
        Pred::Nin(xs) => !xs.iter().any(|x| eq_match(v, x)),
        Pred::Exists(b) => v.is_some() == *b,
        Pred::Cmp(op, x) => match v {
            None => false,
            Some(Value::Array(a)) => a.iter().any(|e| cmp_match(*op, e, x)),
            Some(e) => cmp_match(*op, e, x),
        },
    }
}

/// Mongo equality: deep equality, any element of an array field, null matches missing.
fn eq_match(v: Option<&Value>, x: &Value) -> bool {
    match v {
        None => x.is_null(),
        Some(v) => json_eq(v, x) || matches!(v, Value::Array(a) if a.iter().any(|e| json_eq(e, x))),
    }
}

fn cmp_match(op: CmpOp, v: &Value, x: &Value) -> bool {
    let ord = match (v, x) {
        (Value::Number(a), Value::Number(b)) => num_cmp(a, b),
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    };
    match (ord, op) {
        (None, _) => false,
        (Some(o), CmpOp::Gt) => o == Ordering::Greater,
        (Some(o), CmpOp::Gte) => o != Ordering::Less,
        (Some(o), CmpOp::Lt) => o == Ordering::Less,
        (Some(o), CmpOp::Lte) => o != Ordering::Greater,
    }
}

/// Numeric comparison across integer and float representations (integers compare exactly).
fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    fn as_int(n: &Number) -> Option<i128> {
        n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from))
    }
    match (as_int(a), as_int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Deep JSON equality where numbers compare numerically.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn m(filter: Value, payload: Value) -> bool {
        Filter::parse(&filter).unwrap().matches(&obj(payload))
    }

    fn parse_err(filter: Value) -> String {
        Filter::parse(&filter).unwrap_err().to_string()
    }

    #[test]
    fn equality_by_value() {
        assert!(m(json!({"lang": "en"}), json!({"lang": "en", "year": 2021})));
        assert!(!m(json!({"lang": "en"}), json!({"lang": "fr"})));
        assert!(!m(json!({"lang": "en"}), json!({"year": 2021})));
        assert!(m(json!({"year": 2021}), json!({"year": 2021.0})));
        assert!(m(json!({"ok": true}), json!({"ok": true})));
        assert!(!m(json!({"ok": true}), json!({"ok": 1})));
        assert!(!m(json!({"n": 1}), json!({"n": "1"})));
        assert!(m(json!({"year": {"$eq": 2021}}), json!({"year": 2021})));
    }

    #[test]
    fn empty_filter_matches_all() {
        let f = Filter::parse(&json!({})).unwrap();
        assert!(f.is_match_all());
        assert!(f.matches(&Map::new()));
        assert!(Filter::match_all().matches(&obj(json!({"a": 1}))));
    }

    #[test]
    fn multiple_keys_are_anded() {
        let f = json!({"lang": "en", "year": {"$gte": 2020}});
        assert!(m(f.clone(), json!({"lang": "en", "year": 2020})));
        assert!(!m(f.clone(), json!({"lang": "en", "year": 2019})));
        assert!(!m(f, json!({"lang": "de", "year": 2022})));
        let r = json!({"year": {"$gte": 2020, "$lt": 2022}});
        assert!(m(r.clone(), json!({"year": 2021})));
        assert!(!m(r.clone(), json!({"year": 2022})));
        assert!(!m(r, json!({"year": 2019})));
    }

    #[test]
    fn range_operators_numbers_and_strings() {
        let p = json!({"x": 5, "f": 2.5, "s": "banana", "big": u64::MAX, "neg": -3});
        assert!(m(json!({"x": {"$gt": 4}}), p.clone()));
        assert!(!m(json!({"x": {"$gt": 5}}), p.clone()));
        assert!(m(json!({"x": {"$gte": 5}}), p.clone()));
        assert!(m(json!({"x": {"$lt": 5.5}}), p.clone()));
        assert!(m(json!({"x": {"$lte": 5.0}}), p.clone()));
        assert!(m(json!({"f": {"$gt": 2}}), p.clone()));
        assert!(m(json!({"f": {"$lt": 3}}), p.clone()));
        assert!(m(json!({"s": {"$gt": "apple"}}), p.clone()));
        assert!(m(json!({"s": {"$lt": "cherry"}}), p.clone()));
        assert!(!m(json!({"s": {"$lt": "b"}}), p.clone()));
        assert!(m(json!({"big": {"$gt": i64::MAX}}), p.clone()));
        assert!(m(json!({"neg": {"$lt": 0}}), p.clone()));
        assert!(m(json!({"neg": {"$gt": -3.5}}), p.clone()));
        // across types: false for every operator
        assert!(!m(json!({"s": {"$gt": 1}}), p.clone()));
        assert!(!m(json!({"s": {"$lt": 1}}), p.clone()));
        assert!(!m(json!({"x": {"$lt": "z"}}), p.clone()));
        assert!(!m(json!({"missing": {"$lt": 10}}), p));
        assert!(!m(json!({"x": {"$gt": 1}}), json!({"x": null})));
        assert!(!m(json!({"x": {"$gt": 1}}), json!({"x": true})));
    }

    #[test]
    fn ne_and_nin_match_missing_fields() {
        assert!(m(json!({"lang": {"$ne": "en"}}), json!({"lang": "fr"})));
        assert!(!m(json!({"lang": {"$ne": "en"}}), json!({"lang": "en"})));
        assert!(m(json!({"lang": {"$ne": "en"}}), json!({})));
        assert!(m(json!({"lang": {"$nin": ["en", "de"]}}), json!({})));
        assert!(m(json!({"lang": {"$nin": ["en", "de"]}}), json!({"lang": "fr"})));
        assert!(!m(json!({"lang": {"$nin": ["en", "de"]}}), json!({"lang": "de"})));
        assert!(m(json!({"n": {"$ne": 1}}), json!({"n": "1"})));
    }

    #[test]
    fn in_operator() {
        let f = json!({"lang": {"$in": ["en", "de"]}});
        assert!(m(f.clone(), json!({"lang": "de"})));
        assert!(!m(f.clone(), json!({"lang": "fr"})));
        assert!(!m(f, json!({})));
        assert!(m(json!({"n": {"$in": [1, 2]}}), json!({"n": 2.0})));
        assert!(!m(json!({"n": {"$in": []}}), json!({"n": 2})));
        assert!(m(json!({"n": {"$nin": []}}), json!({"n": 2})));
    }

    #[test]
    fn array_fields_match_any_element() {
        let p = json!({"tags": ["ml", "ai"], "scores": [1, 7]});
        assert!(m(json!({"tags": "ml"}), p.clone()));
        assert!(m(json!({"tags": {"$eq": "ai"}}), p.clone()));
        assert!(!m(json!({"tags": "db"}), p.clone()));
        assert!(m(json!({"tags": {"$in": ["db", "ai"]}}), p.clone()));
        assert!(!m(json!({"tags": {"$nin": ["db", "ai"]}}), p.clone()));
        assert!(m(json!({"tags": {"$nin": ["db"]}}), p.clone()));
        assert!(!m(json!({"tags": {"$ne": "ml"}}), p.clone()));
        assert!(m(json!({"tags": {"$ne": "db"}}), p.clone()));
        assert!(m(json!({"scores": {"$gt": 5}}), p.clone()));
        assert!(!m(json!({"scores": {"$gt": 7}}), p.clone()));
        // equality to an array value is exact
        assert!(m(json!({"tags": ["ml", "ai"]}), p.clone()));
        assert!(!m(json!({"tags": ["ai", "ml"]}), p.clone()));
        assert!(!m(json!({"tags": ["ml"]}), p.clone()));
        assert!(m(json!({"tags": {"$eq": ["ml", "ai"]}}), p.clone()));
        // array index path
        assert!(m(json!({"tags.0": "ml"}), p.clone()));
        assert!(!m(json!({"tags.1": "ml"}), p.clone()));
        assert!(!m(json!({"tags.9": "ml"}), p.clone()));
        assert!(!m(json!({"tags.x": "ml"}), p));
    }

    #[test]
    fn object_equality_is_exact() {
        let p = json!({"meta": {"a": 1, "b": [1, 2]}});
        assert!(m(json!({"meta": {"a": 1.0, "b": [1, 2]}}), p.clone()));
        assert!(!m(json!({"meta": {"a": 1}}), p.clone()));
        assert!(!m(json!({"meta": {}}), p.clone()));
        assert!(m(json!({"meta": {}}), json!({"meta": {}})));
    }

    #[test]
    fn null_and_exists() {
        assert!(m(json!({"x": null}), json!({})));
        assert!(m(json!({"x": null}), json!({"x": null})));
        assert!(!m(json!({"x": null}), json!({"x": 0})));
        assert!(m(json!({"x": {"$in": [null, 3]}}), json!({})));
        assert!(m(json!({"x": {"$exists": true}}), json!({"x": null})));
        assert!(!m(json!({"x": {"$exists": true}}), json!({"y": 1})));
        assert!(m(json!({"x": {"$exists": false}}), json!({"y": 1})));
        assert!(!m(json!({"x": {"$exists": false}}), json!({"x": 1})));
        assert!(m(json!({"a.b": {"$exists": true}}), json!({"a": {"b": false}})));
        assert!(!m(json!({"a.b": {"$exists": true}}), json!({"a": 5})));
    }

    #[test]
    fn dotted_paths() {
        let p = json!({"meta": {"author": {"name": "ann", "age": 40}}, "a.b": 1});
        assert!(m(json!({"meta.author.name": "ann"}), p.clone()));
        assert!(m(json!({"meta.author.age": {"$gte": 40}}), p.clone()));
        assert!(!m(json!({"meta.author.name": "bob"}), p.clone()));
        assert!(!m(json!({"meta.author.name.first": "ann"}), p.clone()));
        assert!(!m(json!({"meta.editor.name": "ann"}), p.clone()));
        // a literal dotted key is not addressable; the path walks objects
        assert!(!m(json!({"a.b": 1}), p));
    }

    #[test]
    fn logical_operators() {
        let p = json!({"lang": "en", "year": 2019});
        assert!(m(json!({"$or": [{"lang": "de"}, {"year": 2019}]}), p.clone()));
        assert!(!m(json!({"$or": [{"lang": "de"}, {"year": 2020}]}), p.clone()));
        assert!(m(json!({"$and": [{"lang": "en"}, {"year": {"$lt": 2020}}]}), p.clone()));
        assert!(!m(json!({"$and": [{"lang": "en"}, {"year": {"$gt": 2020}}]}), p.clone()));
        assert!(m(json!({"$not": {"lang": "de"}}), p.clone()));
        assert!(!m(json!({"$not": {"lang": "en"}}), p.clone()));
        assert!(m(json!({"year": {"$not": {"$gt": 2020}}}), p.clone()));
        assert!(!m(json!({"year": {"$not": {"$lt": 2020}}}), p.clone()));
        assert!(m(json!({"missing": {"$not": {"$gt": 1}}}), p.clone()));
        // nesting and mixing with fields at the same level
        let f =
            json!({"lang": "en", "$or": [{"year": 2018}, {"$and": [{"year": {"$gte": 2019}}, {"$not": {"x": 1}}]}]});
        assert!(m(f.clone(), p.clone()));
        assert!(!m(f, json!({"lang": "en", "year": 2019, "x": 1})));
    }

    #[test]
    fn errors_name_the_offending_part() {
        assert_eq!(parse_err(json!({"year": {"$foo": 1}})), r#"filter: unknown operator "$foo" at "year""#);
        assert_eq!(
            parse_err(json!({"tags": {"$in": "ml"}})),
            r#"filter: $in at "tags" expects an array, got a string"#
        );
        assert_eq!(parse_err(json!({"$and": []})), "filter: $and expects a non-empty array of filters");
        assert_eq!(parse_err(json!({"$or": {"a": 1}})), "filter: $or expects a non-empty array of filters");
        assert!(parse_err(json!({"$and": [{"a": 1}, 3]})).contains("$and[1]"));
        assert!(parse_err(json!([1, 2])).contains("top level"));
        assert!(parse_err(json!("x")).contains("top level"));
        assert!(parse_err(json!({"$nor": []})).contains("\"$nor\""));
        assert!(parse_err(json!({"$not": [1]})).contains("$not"));
        assert!(parse_err(json!({"year": {"$gt": [1]}})).contains(r#"$gt at "year" expects a number or a string"#));
        assert!(parse_err(json!({"year": {"$gte": null}})).contains("$gte"));
        assert!(parse_err(json!({"x": {"$exists": 1}})).contains(r#"$exists at "x""#));
        assert!(parse_err(json!({"x": {"$gt": 1, "y": 2}})).contains(r#"at "x""#));
        assert!(parse_err(json!({"a..b": 1})).contains(r#""a..b""#));
        assert!(parse_err(json!({"": 1})).contains("invalid field path"));
        assert!(parse_err(json!({"x": {"$not": 3}})).contains(r#"$not at "x""#));
        assert!(parse_err(json!({"$or": [{"y": {"$bad": 1}}]})).contains(r#""$bad" at "y""#));
        assert!(matches!(Filter::parse(&json!(1)), Err(Error::InvalidArgument(_))));
        assert!(Filter::parse_str("{").unwrap_err().to_string().contains("invalid JSON"));
    }

    #[test]
    fn parse_str_round_trip() {
        let f = Filter::parse_str(r#"{"lang": "en", "year": {"$gte": 2020}}"#).unwrap();
        assert!(f.matches(&obj(json!({"lang": "en", "year": 2024}))));
        assert_eq!(f, Filter::parse(&json!({"lang": "en", "year": {"$gte": 2020}})).unwrap());
    }
}

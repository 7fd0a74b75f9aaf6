//! Session tokens (DESIGN §3, `session` reads): per collection, the log index of this client's last
//! acknowledged write to each shard of the collection's current incarnation (`uid`). Writes feed them in,
//! reads send them back so the serving replica has applied at least that far.

use std::collections::HashMap;
use std::sync::Mutex;

use shoal_api::v1::SessionToken;

/// The tokens of one collection: its incarnation and, per shard, the highest index written.
#[derive(Debug, Default, Clone, PartialEq)]
struct CollectionSession {
    /// Incarnation the indexes belong to; a re-created collection has a larger uid.
    uid: u64,
    /// Shard id -> highest log index of this client's acknowledged writes.
    shards: HashMap<u32, u64>,
}

/// Session tokens of one client, keyed by collection name. Cheap: one short critical section per call.
#[derive(Debug, Default)]
pub struct Sessions {
    /// Collection name -> its tokens.
    inner: Mutex<HashMap<String, CollectionSession>>,
}

impl Sessions {
    /// Records the tokens of an acknowledged write to `collection`. A token of a newer incarnation (larger
    /// uid) replaces everything known for the collection; one of an older incarnation is ignored.
    pub fn record(&self, collection: &str, tokens: &[SessionToken]) {
        if tokens.is_empty() {
            return;
        }
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let s = match map.get_mut(collection) {
            Some(s) => s,
            None => map.entry(collection.to_string()).or_default(),
        };
        for t in tokens {
            if t.uid > s.uid {
                s.uid = t.uid;
                s.shards.clear();
            }
            if t.uid == s.uid {
                let idx = s.shards.entry(t.shard).or_insert(0);
                *idx = (*idx).max(t.index);
            }
        }
    }

    /// The tokens to send with a read of `collection` (empty when this client never wrote to it).
    pub fn tokens(&self, collection: &str) -> Vec<SessionToken> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(collection) {
            Some(s) => s.shards.iter().map(|(&shard, &index)| SessionToken { uid: s.uid, shard, index }).collect(),
            None => Vec::new(),
        }
    }

    /// Forgets a collection (it was dropped through this client).
    pub fn forget(&self, collection: &str) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).remove(collection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(uid: u64, shard: u32, index: u64) -> SessionToken {
        SessionToken { uid, shard, index }
    }

    fn sorted(mut v: Vec<SessionToken>) -> Vec<(u64, u32, u64)> {
        v.sort_by_key(|t| t.shard);
        v.into_iter().map(|t| (t.uid, t.shard, t.index)).collect()
    }

    #[test]
    fn keeps_the_highest_index_per_shard() {
        let s = Sessions::default();
        assert!(s.tokens("c").is_empty());
        s.record("c", &[tok(7, 0, 5), tok(7, 1, 3)]);
        s.record("c", &[tok(7, 0, 4), tok(7, 1, 9)]);
        assert_eq!(sorted(s.tokens("c")), vec![(7, 0, 5), (7, 1, 9)]);
        assert!(s.tokens("other").is_empty(), "collections are separate");
    }

    #[test]
    fn a_newer_incarnation_replaces_and_an_older_one_is_ignored() {
        let s = Sessions::default();
        s.record("c", &[tok(7, 0, 50), tok(7, 1, 30)]);
        s.record("c", &[tok(9, 1, 2)]);
        assert_eq!(sorted(s.tokens("c")), vec![(9, 1, 2)]);
        s.record("c", &[tok(7, 0, 99)]);
        assert_eq!(sorted(s.tokens("c")), vec![(9, 1, 2)]);
        s.forget("c");
        assert!(s.tokens("c").is_empty());
    }
}

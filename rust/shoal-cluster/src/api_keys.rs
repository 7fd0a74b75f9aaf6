//! API keys (DESIGN §11): roles, the keys' hashes, and the engine's key management through group 0.
//!
//! A key is `shoal_` + 43 url-safe characters of 32 random bytes; nodes keep only its SHA-256 (group 0 for
//! keys made at runtime, the `--api-keys` file for the ones a node starts with), and a revocation in group 0
//! wins over the file. Roles nest: `read` < `write` < `admin`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_api::commands::{MetaCommand, check_key_name};
use shoal_api::internal::ApiKey;

use crate::engine::Engine;
use crate::{Error, Result};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// search, get, count, scroll, shards, nodes, health.
    Read,
    /// read + upsert, delete, update_payload.
    Write,
    /// write + collections, membership, rebalance, key management.
    Admin,
}

impl Role {
    /// Parses "read", "write" or "admin".
    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            o => Err(Error::InvalidArgument(
                format!("unknown role {o:?}: expected \"read\", \"write\" or \"admin\"").into(),
            )),
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// SHA-256 of a key.
pub fn hash_key(key: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes()).as_ref().to_vec()
}

/// A new random key.
pub fn new_key() -> String {
    let id = shoal_core::dedup::WriteId::random().to_bytes();
    let id2 = shoal_core::dedup::WriteId::random().to_bytes();
    let mut out = String::from("shoal_");
    for b in id.iter().chain(&id2) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Keys a node starts with (its `--api-keys` file): name -> (role, hash).
#[derive(Debug, Clone, Default)]
pub struct KeyFile {
    /// By name.
    pub keys: BTreeMap<String, (Role, Vec<u8>)>,
}

impl KeyFile {
    /// Parses the file: one key per line, `NAME ROLE SHA256-HEX`; blank lines and `#` comments ignored.
    pub fn parse(text: &str) -> std::result::Result<KeyFile, String> {
        let mut keys = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [name, role, hex] = parts[..] else {
                return Err(format!("line {}: expected NAME ROLE SHA256-HEX", i + 1));
            };
            check_key_name(name).map_err(|e| format!("line {}: {e}", i + 1))?;
            let role = Role::parse(role).map_err(|e| format!("line {}: {e}", i + 1))?;
            let hash =
                unhex(hex).filter(|h| h.len() == 32).ok_or_else(|| format!("line {}: bad SHA-256 hex", i + 1))?;
            keys.insert(name.to_string(), (role, hash));
        }
        Ok(KeyFile { keys })
    }

    /// The file's text for `keys` (name, role, key).
    pub fn render(keys: &[(String, Role, String)]) -> String {
        let mut out =
            String::from("# Shoal API keys: NAME ROLE SHA256-OF-KEY (nodes never hold the keys themselves)\n");
        for (name, role, key) in keys {
            out.push_str(&format!("{name} {} {}\n", role.as_str(), hex(&hash_key(key))));
        }
        out
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl Engine {
    /// The (name, role) of the key `key`, if the cluster knows it and it is not revoked.
    pub fn authenticate_key(&self, key: &str) -> Option<(String, Role)> {
        let hash = hash_key(key);
        if let Some((name, role)) = self.meta.catalog.api_key_role(&hash) {
            return Some((name, Role::parse(&role).ok()?));
        }
        let (name, (role, _)) = self.key_file().keys.iter().find(|(_, (_, h))| *h == hash)?;
        (!self.meta.catalog.api_key_revoked(name)).then(|| (name.clone(), *role))
    }

    /// Makes a new key with `role` named `name` (a random name when `None`), replicated through group 0;
    /// returns (name, key). The key is shown here only: the cluster keeps its hash.
    pub async fn create_api_key(
        &self,
        role: &str,
        name: Option<String>,
        timeout: Duration,
    ) -> Result<(String, String)> {
        self.check_open()?;
        let role = Role::parse(role)?;
        let name = name.unwrap_or_else(|| format!("key-{}", &new_key()[6..14]));
        check_key_name(&name)?;
        if self.meta.catalog.api_keys().iter().any(|(n, _)| *n == name) || self.key_file().keys.contains_key(&name) {
            return Err(Error::InvalidArgument(format!("an API key named {name:?} exists already").into()));
        }
        let key = new_key();
        let cmd =
            MetaCommand::PutApiKey(ApiKey { name: name.clone(), role: role.as_str().into(), hash: hash_key(&key) });
        self.meta.propose(&cmd, Instant::now() + timeout).await?;
        Ok((name, key))
    }

    /// Revokes the key named `name` on every node (also a key of the nodes' `--api-keys` files).
    pub async fn revoke_api_key(&self, name: &str, timeout: Duration) -> Result<bool> {
        self.check_open()?;
        let known =
            self.meta.catalog.api_keys().iter().any(|(n, _)| n == name) || self.key_file().keys.contains_key(name);
        if !known {
            return Err(Error::InvalidArgument(format!("no API key named {name:?}").into()));
        }
        self.meta.propose(&MetaCommand::RevokeApiKey(name.to_string()), Instant::now() + timeout).await
    }

    /// (name, role) of every key in force, never the keys.
    pub fn list_api_keys(&self) -> Vec<(String, String)> {
        let mut out: BTreeMap<String, String> = self.meta.catalog.api_keys().into_iter().collect();
        for (name, (role, _)) in &self.key_file().keys {
            if !self.meta.catalog.api_key_revoked(name) {
                out.entry(name.clone()).or_insert_with(|| role.as_str().to_string());
            }
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_name_the_bad_line() {
        let key = new_key();
        assert!(key.starts_with("shoal_") && key.len() == 6 + 64);
        assert_ne!(new_key(), key);
        let text = KeyFile::render(&[("admin".into(), Role::Admin, key.clone())]);
        let f = KeyFile::parse(&text).unwrap();
        assert_eq!(f.keys["admin"], (Role::Admin, hash_key(&key)));
        assert!(!text.contains(&key), "the file holds the hash, never the key");
        let e = KeyFile::parse("ok read 00\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("SHA-256"), "{e}");
        assert!(KeyFile::parse("a root abc").unwrap_err().contains("role"));
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
    }
}

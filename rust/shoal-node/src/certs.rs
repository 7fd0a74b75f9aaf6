//! `shoal-node certs`: makes a cluster's security material in one directory (DESIGN §11): a CA, one
//! certificate and key per node (DNS name `shoal-node` plus the given hosts, URI `shoal://node/<id>`), an
//! admin API key and the key file the nodes load (hashes only). With `--ca-dir` it adds node certificates to
//! an existing CA (a node joining later). Secrets are written with mode 0600.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use shoal_cluster::api_keys::{KeyFile, Role, new_key};

/// Help text of the certs command.
pub const USAGE: &str =
    "usage: shoal-node certs --out DIR (--nodes N | --node-ids 1,2,5) [--hosts H1,H2,...] [--ca-dir DIR]

Makes a cluster's TLS and API-key material in DIR:
  ca.pem, ca.key            the cluster CA (keep ca.key private: it signs node certificates)
  node-<id>.pem, .key       one certificate per node: DNS `shoal-node` and every --hosts entry (names or IP
                            addresses the nodes are reached at; 127.0.0.1 and localhost always), URI
                            shoal://node/<id>
  admin.key                 an admin API key (the secret: give it to clients as `authorization: Bearer`)
  api-keys                  the key file for --api-keys (names, roles and SHA-256 hashes, no secrets)
With --ca-dir, the CA of that directory signs the new node certificates (no new CA, no new admin key).
Start each node with --tls-cert DIR/node-<id>.pem --tls-key DIR/node-<id>.key --tls-ca DIR/ca.pem
--api-keys DIR/api-keys.";

/// Runs the certs command with its arguments (after `certs`); returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    match parse(args).and_then(|a| make(&a)) {
        Ok(summary) => {
            println!("{summary}");
            0
        }
        Err(e) => {
            eprintln!("{USAGE}\n\nshoal-node certs: {e}");
            2
        }
    }
}

/// What to make.
#[derive(Debug, Clone)]
pub struct CertsArgs {
    /// Output directory.
    pub out: PathBuf,
    /// Node ids to make certificates for.
    pub node_ids: Vec<u64>,
    /// Extra DNS names / IP addresses of every node certificate.
    pub hosts: Vec<String>,
    /// An existing CA directory (ca.pem + ca.key) to sign with.
    pub ca_dir: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<CertsArgs, String> {
    let mut a = CertsArgs { out: PathBuf::new(), node_ids: Vec::new(), hosts: Vec::new(), ca_dir: None };
    let mut out = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--nodes" => {
                let n: u64 =
                    value()?.parse().ok().filter(|n| (1..=1000).contains(n)).ok_or("--nodes takes 1..=1000")?;
                a.node_ids = (1..=n).collect();
            }
            "--node-ids" => {
                a.node_ids = value()?
                    .split(',')
                    .map(|s| s.trim().parse::<u64>().ok().filter(|n| *n >= 1).ok_or(format!("bad node id {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--hosts" => {
                a.hosts = value()?.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
            }
            "--ca-dir" => a.ca_dir = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.out = out.ok_or("--out is required")?;
    if a.node_ids.is_empty() {
        return Err("--nodes or --node-ids is required".into());
    }
    Ok(a)
}

fn ca_params() -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "shoal cluster CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

fn write_file(path: &Path, data: &str, secret: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true).mode(if secret { 0o600 } else { 0o644 });
    let mut f = o.open(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(data.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Makes the files; returns a summary for the operator.
pub fn make(a: &CertsArgs) -> Result<String, String> {
    std::fs::create_dir_all(&a.out).map_err(|e| format!("cannot create {}: {e}", a.out.display()))?;
    let (issuer, made_ca) = match &a.ca_dir {
        Some(dir) => {
            let key_pem = std::fs::read_to_string(dir.join("ca.key"))
                .map_err(|e| format!("cannot read {}: {e}", dir.join("ca.key").display()))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("ca.key: {e}"))?;
            if dir != &a.out {
                let ca = std::fs::read_to_string(dir.join("ca.pem")).map_err(|e| format!("ca.pem: {e}"))?;
                write_file(&a.out.join("ca.pem"), &ca, false)?;
            }
            (Issuer::new(ca_params()?, key), false)
        }
        None => {
            let key = KeyPair::generate().map_err(|e| e.to_string())?;
            let params = ca_params()?;
            let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
            write_file(&a.out.join("ca.pem"), &cert.pem(), false)?;
            write_file(&a.out.join("ca.key"), &key.serialize_pem(), true)?;
            (Issuer::new(params, key), true)
        }
    };
    let mut hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    for h in &a.hosts {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    for &id in &a.node_ids {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, format!("shoal-node-{id}"));
        let mut sans = vec![SanType::DnsName(shoal_raft::tls::SERVER_NAME.try_into().map_err(|e| format!("{e}"))?)];
        for h in &hosts {
            sans.push(match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.as_str().try_into().map_err(|e| format!("host {h:?}: {e}"))?),
            });
        }
        sans.push(SanType::URI(shoal_raft::tls::node_uri(id).try_into().map_err(|e| format!("{e}"))?));
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = p.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
        write_file(&a.out.join(format!("node-{id}.pem")), &cert.pem(), false)?;
        write_file(&a.out.join(format!("node-{id}.key")), &key.serialize_pem(), true)?;
    }
    let mut summary = format!(
        "wrote node certificates {:?} to {} (names: shoal-node, {})",
        a.node_ids,
        a.out.display(),
        hosts.join(", ")
    );
    if made_ca {
        let admin = new_key();
        write_file(&a.out.join("admin.key"), &format!("{admin}\n"), true)?;
        write_file(&a.out.join("api-keys"), &KeyFile::render(&[("admin".into(), Role::Admin, admin)]), false)?;
        summary.push_str("; a new CA (ca.pem, ca.key), an admin key (admin.key) and the key file (api-keys)");
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use shoal_testkit::TempDir;

    use super::*;

    #[test]
    fn makes_a_ca_node_certificates_and_keys() {
        let tmp = TempDir::new("certs");
        let dir = tmp.path().to_path_buf();
        let a = CertsArgs { out: dir.clone(), node_ids: vec![1, 2], hosts: vec!["10.1.2.3".into()], ca_dir: None };
        make(&a).unwrap();
        for f in ["ca.pem", "ca.key", "node-1.pem", "node-1.key", "node-2.pem", "admin.key", "api-keys"] {
            assert!(dir.join(f).exists(), "{f}");
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join("admin.key")).unwrap().permissions().mode() & 0o777, 0o600);
        let admin = std::fs::read_to_string(dir.join("admin.key")).unwrap();
        let keys = KeyFile::parse(&std::fs::read_to_string(dir.join("api-keys")).unwrap()).unwrap();
        assert_eq!(keys.keys["admin"].1, shoal_cluster::api_keys::hash_key(admin.trim()));
        // one more node from the same CA
        let more = CertsArgs { out: dir.clone(), node_ids: vec![7], hosts: vec![], ca_dir: Some(dir.clone()) };
        make(&more).unwrap();
        assert!(dir.join("node-7.pem").exists());
    }
}

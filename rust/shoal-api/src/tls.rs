//! TLS between nodes and towards clients (DESIGN §11): the PEM material a node or client holds, the tonic
//! configurations made from it, and the identity a node certificate carries.
//!
//! Every node certificate is signed by the cluster CA, names the DNS name [`SERVER_NAME`] (what every
//! client and peer verifies, whatever address it dials) and the URI `shoal://node/<id>` (the node id: a
//! peer's requests are accepted only as coming from that node). Node to node is mutual TLS; clients verify
//! the node against the CA and authenticate with API keys instead of certificates.

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The DNS name in every node certificate, verified by clients and peers.
pub const SERVER_NAME: &str = "shoal-node";
/// URI SAN prefix naming a node id.
pub const NODE_URI_PREFIX: &str = "shoal://node/";

/// The URI SAN of node `id`.
pub fn node_uri(id: u64) -> String {
    format!("{NODE_URI_PREFIX}{id}")
}

/// The node id a (DER) certificate names in its URI SAN, if it names exactly one.
pub fn node_id_of(cert_der: &[u8]) -> Option<u64> {
    let der = rustls_pki_types::CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&der).ok()?;
    let mut ids = ee.valid_uri_names().filter_map(|u| u.strip_prefix(NODE_URI_PREFIX)?.parse::<u64>().ok());
    let id = ids.next()?;
    ids.next().is_none().then_some(id)
}

/// A node's TLS material: the cluster CA and its own certificate and key (PEM).
#[derive(Clone)]
pub struct NodeTls {
    /// The cluster CA certificate.
    pub ca_pem: Vec<u8>,
    /// This node's certificate (signed by the CA).
    pub cert_pem: Vec<u8>,
    /// This node's private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls").finish_non_exhaustive()
    }
}

impl NodeTls {
    /// For dialing peers: verify them against the CA (as [`SERVER_NAME`]), present this node's certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(SERVER_NAME)
    }

    /// For serving: present this node's certificate; verify a client certificate against the CA when one is
    /// presented (peers), accept none (clients, who authenticate with API keys). A certificate of another CA
    /// fails the handshake.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
    }
}

/// A client's TLS config: verify nodes against `ca_pem` (as [`SERVER_NAME`]).
pub fn client_config(ca_pem: &[u8]) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(SERVER_NAME)
}

/// The URL scheme for a peer or node address.
pub fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// A lazily connected channel to `ep` whose connection setup, TCP connect and TLS handshake together, is
/// bounded by `handshake_timeout`. (`Endpoint::connect_timeout` bounds only the TCP connect: a paused or hung
/// node accepts TCP in its kernel but never answers the TLS handshake, which would hold every request to its
/// deadline instead of failing it over to another node.)
pub fn lazy_channel(
    ep: tonic::transport::Endpoint,
    handshake_timeout: std::time::Duration,
    nodelay: bool,
) -> tonic::transport::Channel {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(nodelay);
    http.set_connect_timeout(Some(handshake_timeout));
    ep.connect_timeout(handshake_timeout).connect_with_connector_lazy(http)
}

/// Installs ring as rustls's process-wide crypto provider (idempotent); call before building a TLS
/// server or client.
pub fn install_crypto() {
    // Deprecated in rustls 0.23.48 only as advice to prefer aws-lc-rs (post-quantum key exchange); ring is
    // the provider chosen here for its build cost (DESIGN §11, README security model).
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.install_default();
}

/// The authenticated peer of a request, put in its extensions by the node's admission layer when the
/// connection presented a valid node certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerNode(pub u64);

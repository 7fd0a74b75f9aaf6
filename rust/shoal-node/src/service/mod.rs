//! gRPC services: each handler decodes its request (shoal-api), calls the engine, encodes the answer.

pub mod cluster;
pub mod collections;
pub mod internal;
pub mod points;

use std::time::Duration;

/// Default deadline of a request that carries no `grpc-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The time the engine may spend on a request: its `grpc-timeout` header (e.g. `500m`, `10S`, else the
/// default) minus a margin (1/16, within 5..=250 ms), so that an error such as "strong write not
/// replicated in time" reaches the caller before the caller's own deadline turns it into a bare timeout.
pub fn deadline<T>(req: &tonic::Request<T>) -> Duration {
    let t = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    t.saturating_sub((t / 16).clamp(Duration::from_millis(5), Duration::from_millis(250)))
}

/// Longest deadline a request may carry (same bound as the clients' `MAX_TIMEOUT_SECS`).
const MAX_DEADLINE: Duration = Duration::from_secs(1_000_000);

/// Parses a `grpc-timeout` header value: at most 8 digits and a unit (H M S m u n), per the gRPC spec.
/// Values past [`MAX_DEADLINE`] are clamped to it.
pub fn parse_grpc_timeout(s: &str) -> Option<Duration> {
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (num, unit) = s.split_at(s.len() - 1);
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(d.min(MAX_DEADLINE))
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_timeout_units() {
        assert_eq!(super::parse_grpc_timeout("500m"), Some(std::time::Duration::from_millis(500)));
        assert_eq!(super::parse_grpc_timeout("3S"), Some(std::time::Duration::from_secs(3)));
        assert_eq!(super::parse_grpc_timeout("x"), None);
        assert_eq!(super::parse_grpc_timeout("99999999H"), Some(super::MAX_DEADLINE));
        assert_eq!(super::parse_grpc_timeout("999999999999H"), None, "more than 8 digits");
        assert_eq!(super::parse_grpc_timeout("+5S"), None);
    }
}

//! Listen addresses in configuration files, with an error that shows the expected form.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer};

/// Reads a `HOST:PORT` socket address. The standard parser's own error ("invalid socket
/// address syntax") names neither the value nor the form it expects.
pub fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not a socket address: use IP:PORT, for example `127.0.0.1:7070` or `[::1]:7070` (host names are not resolved)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Section {
        #[serde(deserialize_with = "socket_addr")]
        listen: SocketAddr,
    }

    #[test]
    fn names_the_value_and_the_form() {
        let error = toml::from_str::<Section>("listen = \"not-an-addr\"")
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("`not-an-addr` is not a socket address"),
            "{error}"
        );
        assert!(error.contains("127.0.0.1:7070"), "{error}");
        let section: Section = toml::from_str("listen = \"127.0.0.1:9\"").expect("valid address");
        assert_eq!(section.listen, SocketAddr::from(([127, 0, 0, 1], 9)));
    }
}

//! Request description of a load run: address, method, paths, headers, body, timeout.
//!
//! [`HttpTarget`] is the user-facing description. Executors validate it once into a
//! [`RequestTemplate`], which contains parsed URIs and a ready header map, so building a
//! request on the hot path costs only clones of shared buffers. [`PathPicker`] chooses
//! the path of each request by smooth weighted round-robin, which spreads the paths
//! evenly and needs no random numbers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};

use crate::load::error::LoadError;

/// Default per-request timeout of [`HttpTarget::new`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request path and how often it is chosen relative to the other paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedPath {
    /// Origin-form path with an optional query, such as `/search?q=shadow`.
    pub path: String,
    /// Relative share of requests. A path of weight 3 gets three times the requests of a
    /// path of weight 1.
    pub weight: u32,
}

/// HTTP/1.1 requests to send to one server.
///
/// There is no default address: the caller names the server. Umbra aims load only at
/// shadows, which listen on loopback ports that Umbra chose.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// Server address to connect to.
    pub addr: SocketAddr,
    /// Request method, `GET` by default.
    pub method: Method,
    /// Paths to request, chosen by weighted round-robin. `[("/", 1)]` by default.
    pub paths: Vec<WeightedPath>,
    /// Value of the `Host` header. When `None`, the address is used, such as
    /// `127.0.0.1:8080`.
    pub host: Option<String>,
    /// Extra request headers, sent in this order after `Host`.
    pub headers: Vec<(String, String)>,
    /// Request body, empty by default. Hyper sets `Content-Length` from its size.
    pub body: Bytes,
    /// Time allowed for one request, including any connect, until the end of the
    /// response body. The closed model counts it from the actual send. The open model
    /// counts it from the intended send time, so time spent in the queue uses it up.
    pub timeout: Duration,
}

impl HttpTarget {
    /// Creates a target that sends `GET /` to `addr` with [`DEFAULT_TIMEOUT`].
    pub fn new(addr: SocketAddr) -> Self {
        HttpTarget {
            addr,
            method: Method::GET,
            paths: vec![WeightedPath {
                path: "/".to_owned(),
                weight: 1,
            }],
            host: None,
            headers: Vec::new(),
            body: Bytes::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the request method.
    pub fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Replaces the paths with `paths`, each of weight 1, so they are used in turn.
    pub fn with_paths<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.paths = paths
            .into_iter()
            .map(|path| WeightedPath {
                path: path.into(),
                weight: 1,
            })
            .collect();
        self
    }

    /// Replaces the paths with `(path, weight)` pairs.
    pub fn with_weighted_paths<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        self.paths = paths
            .into_iter()
            .map(|(path, weight)| WeightedPath {
                path: path.into(),
                weight,
            })
            .collect();
        self
    }

    /// Adds a request header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the request body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A validated [`HttpTarget`], ready to stamp out requests.
#[derive(Debug)]
pub(crate) struct RequestTemplate {
    pub(crate) addr: SocketAddr,
    pub(crate) timeout: Duration,
    method: Method,
    uris: Vec<Uri>,
    weights: Vec<u32>,
    headers: HeaderMap,
    body: Bytes,
}

impl RequestTemplate {
    /// Validates `target` and parses its paths and headers once.
    pub(crate) fn new(target: &HttpTarget) -> Result<Self, LoadError> {
        if target.paths.is_empty() {
            return Err(LoadError::NoPaths);
        }
        if target.timeout.is_zero() {
            return Err(LoadError::ZeroDuration {
                setting: "timeout",
                value: target.timeout,
            });
        }

        let mut uris = Vec::with_capacity(target.paths.len());
        let mut weights = Vec::with_capacity(target.paths.len());
        for WeightedPath { path, weight } in &target.paths {
            uris.push(parse_path(path)?);
            if *weight == 0 {
                return Err(LoadError::ZeroWeight { path: path.clone() });
            }
            weights.push(*weight);
        }

        let host = target
            .host
            .clone()
            .unwrap_or_else(|| target.addr.to_string());
        let mut headers = HeaderMap::with_capacity(target.headers.len() + 1);
        headers.insert(header::HOST, parse_header_value("host", &host)?);
        for (name, value) in &target.headers {
            let header_name = HeaderName::try_from(name.as_str()).map_err(|source| {
                LoadError::InvalidHeaderName {
                    name: name.clone(),
                    source,
                }
            })?;
            headers.append(header_name, parse_header_value(name, value)?);
        }

        Ok(RequestTemplate {
            addr: target.addr,
            timeout: target.timeout,
            method: target.method.clone(),
            uris,
            weights,
            headers,
            body: target.body.clone(),
        })
    }

    /// Builds the request for path number `path_index`, as chosen by a [`PathPicker`].
    pub(crate) fn request(&self, path_index: usize) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        if let Some(uri) = self.uris.get(path_index) {
            *request.uri_mut() = uri.clone();
        }
        *request.headers_mut() = self.headers.clone();
        request
    }

    /// Creates a path picker whose sequence starts `offset` picks in, so that workers
    /// created with different offsets do not all request the same path at once.
    pub(crate) fn path_picker(&self, offset: usize) -> PathPicker {
        let mut picker = PathPicker {
            weights: self.weights.clone(),
            current: vec![0; self.weights.len()],
            total: self.weights.iter().map(|weight| i64::from(*weight)).sum(),
        };
        for _ in 0..offset % self.weights.len() {
            picker.next_index();
        }
        picker
    }
}

fn parse_path(path: &str) -> Result<Uri, LoadError> {
    let invalid = |source| LoadError::InvalidPath {
        path: path.to_owned(),
        source,
    };
    if !path.starts_with('/') {
        return Err(invalid(None));
    }

    Uri::try_from(path).map_err(|source| invalid(Some(source)))
}

fn parse_header_value(name: &str, value: &str) -> Result<HeaderValue, LoadError> {
    HeaderValue::try_from(value).map_err(|source| LoadError::InvalidHeaderValue {
        name: name.to_owned(),
        source,
    })
}

/// Smooth weighted round-robin over path indexes, as in nginx's upstream balancer: each
/// pick adds every weight to its counter, takes the largest counter and lowers it by the
/// total weight. Weights 5:1:1 yield `a a b a c a a` rather than five `a`s in a row.
#[derive(Debug, Clone)]
pub(crate) struct PathPicker {
    weights: Vec<u32>,
    current: Vec<i64>,
    total: i64,
}

impl PathPicker {
    /// Returns the index of the next path to request.
    pub(crate) fn next_index(&mut self) -> usize {
        let mut chosen = 0;
        for (index, weight) in self.weights.iter().enumerate() {
            self.current[index] += i64::from(*weight);
            if self.current[index] > self.current[chosen] {
                chosen = index;
            }
        }
        self.current[chosen] -= self.total;
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> HttpTarget {
        HttpTarget::new(SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    fn picks(template: &RequestTemplate, offset: usize, count: usize) -> Vec<usize> {
        let mut picker = template.path_picker(offset);
        (0..count).map(|_| picker.next_index()).collect()
    }

    #[test]
    fn equal_weights_rotate_in_order() {
        let template =
            RequestTemplate::new(&target().with_paths(["/a", "/b", "/c"])).expect("valid target");

        assert_eq!(picks(&template, 0, 6), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(picks(&template, 1, 3), vec![1, 2, 0]);
    }

    #[test]
    fn weights_set_share_and_interleave() {
        let paths = [("/a", 5), ("/b", 1), ("/c", 1)];
        let template =
            RequestTemplate::new(&target().with_weighted_paths(paths)).expect("valid target");

        let sequence = picks(&template, 0, 70);

        assert_eq!(sequence.iter().filter(|index| **index == 0).count(), 50);
        assert_eq!(sequence.iter().filter(|index| **index == 1).count(), 10);
        assert_eq!(sequence[..7], [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn request_carries_template_parts() {
        let target = target()
            .with_method(Method::POST)
            .with_paths(["/orders?limit=5"])
            .with_header("x-shadow", "1")
            .with_body("{}");
        let template = RequestTemplate::new(&target).expect("valid target");

        let request = template.request(0);

        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "/orders?limit=5");
        assert_eq!(request.headers()[header::HOST], "127.0.0.1:8080");
        assert_eq!(request.headers()["x-shadow"], "1");
    }

    #[test]
    fn host_header_can_be_overridden() {
        let mut target = target();
        target.host = Some("shadow.local".to_owned());
        let template = RequestTemplate::new(&target).expect("valid target");

        let request = template.request(0);

        assert_eq!(request.headers()[header::HOST], "shadow.local");
    }

    #[test]
    fn path_without_slash_is_rejected() {
        let error = RequestTemplate::new(&target().with_paths(["health"])).expect_err("relative");

        assert_eq!(
            error.to_string(),
            "invalid request path `health`: expected an absolute path such as `/health`"
        );
    }

    #[test]
    fn path_with_space_is_rejected() {
        let error = RequestTemplate::new(&target().with_paths(["/a b"])).expect_err("space");

        assert!(
            matches!(
                error,
                LoadError::InvalidPath {
                    source: Some(_),
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn zero_weight_is_rejected() {
        let target = target().with_weighted_paths([("/a", 1), ("/b", 0)]);

        let error = RequestTemplate::new(&target).expect_err("zero weight");

        assert!(matches!(error, LoadError::ZeroWeight { ref path } if path == "/b"));
    }

    #[test]
    fn empty_path_list_is_rejected() {
        let target = target().with_paths(Vec::<String>::new());

        let error = RequestTemplate::new(&target).expect_err("no paths");

        assert!(matches!(error, LoadError::NoPaths));
    }

    #[test]
    fn invalid_header_value_hides_value() {
        let target = target().with_header("authorization", "secret\nvalue");

        let error = RequestTemplate::new(&target).expect_err("newline in value");

        assert_eq!(
            error.to_string(),
            "invalid value for header `authorization`"
        );
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let target = target().with_timeout(Duration::ZERO);

        let error = RequestTemplate::new(&target).expect_err("zero timeout");

        assert!(matches!(
            error,
            LoadError::ZeroDuration {
                setting: "timeout",
                ..
            }
        ));
    }
}

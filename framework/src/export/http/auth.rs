//! Bearer-token authentication for the REST API (`rest_api_server.token_file`, or the inline
//! `token`): a tower layer that answers `401` with a JSON body in the REST API's shape and
//! `WWW-Authenticate: Bearer` unless the request carries `Authorization: Bearer <token>`.
//!
//! Upstream has no authentication besides optional mTLS. Here the token, when configured, is
//! required for requests that change state (PUT): the REST router applies
//! `require_bearer(token).writes_only()` to the whole router, or `require_bearer(token)` to the
//! routes it wants guarded (`put(handler.layer(...))`, `Router::route_layer`).
//!
//! Only the SHA-256 digest of the token is kept; a presented token is hashed and the digests are
//! compared in constant time, so neither the token's bytes nor its length leak through timing.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::trusted_file::{self, Access};

/// Longest accepted token (and token file), bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file failed the ownership, mode or size rules, or could not be read.
    #[error(transparent)]
    File(#[from] trusted_file::FileError),
    /// The token is empty, too long, or has characters a header cannot carry.
    #[error("{0}")]
    Invalid(String),
}

/// The expected bearer token (only its digest is held); cheap to clone.
#[derive(Clone)]
pub struct BearerToken {
    digest: Arc<[u8; 32]>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl BearerToken {
    /// A token given as text: 1 to [`MAX_TOKEN_BYTES`] visible ASCII characters (no spaces).
    pub fn new(token: &str) -> Result<Self, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Invalid("the token is empty".into()));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid(format!(
                "the token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        if let Some(pos) = token.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(TokenError::Invalid(format!(
                "the token has a space, control or non-ASCII character at byte {}",
                pos + 1
            )));
        }
        Ok(BearerToken {
            digest: Arc::new(sha256(token.as_bytes())),
        })
    }

    /// The token held in `path`: the file's content without trailing whitespace (a final newline
    /// is usual). The file must be owned by root or the daemon's user and accessible by nobody
    /// else (mode `0600`/`0400`).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let bytes = trusted_file::read(path, Access::Secret, MAX_TOKEN_BYTES as u64 + 2)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| TokenError::Invalid(format!("{}: not UTF-8 text", path.display())))?;
        BearerToken::new(text.trim_end())
            .map_err(|e| TokenError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Whether `presented` is the token (constant time in its content and length).
    pub fn matches(&self, presented: &[u8]) -> bool {
        sha256(presented).ct_eq(&self.digest[..]).into()
    }
}

/// The layer [`require_bearer`] returns.
#[derive(Debug, Clone)]
pub struct RequireBearer {
    token: BearerToken,
    writes_only: bool,
}

/// A layer refusing requests without `Authorization: Bearer <token>` (`401`, JSON body,
/// `WWW-Authenticate: Bearer`).
pub fn require_bearer(token: BearerToken) -> RequireBearer {
    RequireBearer {
        token,
        writes_only: false,
    }
}

impl RequireBearer {
    /// Let GET, HEAD and OPTIONS through without a token; every other method needs it.
    pub fn writes_only(mut self) -> Self {
        self.writes_only = true;
        self
    }

    /// `None` if `req` may pass, else the `401` answer.
    fn check<B>(&self, req: &Request<B>) -> Option<Response> {
        if self.writes_only && matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        {
            return None;
        }
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Some(unauthorized(
                "authorization required: send Authorization: Bearer <token>",
                r#"Bearer realm="gala-gopher""#,
            ));
        };
        let presented = value.as_bytes();
        let token = match presented.iter().position(|&b| b == b' ') {
            Some(sp) if presented[..sp].eq_ignore_ascii_case(b"bearer") => {
                presented[sp..].trim_ascii_start()
            }
            _ => {
                return Some(unauthorized(
                    "authorization required: send Authorization: Bearer <token>",
                    r#"Bearer realm="gala-gopher""#,
                ))
            }
        };
        if self.token.matches(token) {
            None
        } else {
            Some(unauthorized(
                "invalid bearer token",
                r#"Bearer realm="gala-gopher", error="invalid_token""#,
            ))
        }
    }
}

/// `401` in the REST API's reply shape.
fn unauthorized(message: &str, challenge: &'static str) -> Response {
    let body = serde_json::json!({ "result": "failed", "message": message }).to_string();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

impl<S> tower::Layer<S> for RequireBearer {
    type Service = RequireBearerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireBearerService {
            inner,
            auth: self.clone(),
        }
    }
}

/// The service [`RequireBearer`] wraps around a route or router.
#[derive(Debug, Clone)]
pub struct RequireBearerService<S> {
    inner: S,
    auth: RequireBearer,
}

impl<S, B> tower::Service<Request<B>> for RequireBearerService<S>
where
    S: tower::Service<Request<B>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.auth.check(&req) {
            None => Box::pin(self.inner.call(req)),
            Some(refusal) => Box::pin(std::future::ready(Ok(refusal))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::os::unix::fs::PermissionsExt;

    use axum::routing::get;
    use axum::Router;
    use tower::Service as _;

    use super::*;

    fn router(layer: RequireBearer) -> Router {
        Router::new()
            .route("/p", get(|| async { "got" }).put(|| async { "put" }))
            .layer(layer)
    }

    async fn call(
        r: &mut Router,
        method: Method,
        auth: Option<&str>,
    ) -> (StatusCode, Option<String>, String) {
        let mut req = Request::builder().method(method).uri("/p");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = r
            .call(req.body(Body::empty()).unwrap())
            .await
            .unwrap_or_else(|e: Infallible| match e {});
        let status = resp.status();
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, challenge, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn every_method_needs_the_token() {
        let mut r = router(require_bearer(BearerToken::new("s3cret").unwrap()));
        let (status, challenge, body) = call(&mut r, Method::GET, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="gala-gopher""#));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["result"], "failed");
        assert!(v["message"].as_str().unwrap().contains("Bearer"));

        let (status, challenge, _) = call(&mut r, Method::PUT, Some("Bearer wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(challenge.unwrap().contains("invalid_token"));
        // Other schemes, a prefix or a longer token are refused too.
        for bad in [
            "Basic s3cret",
            "Bearer s3cre",
            "Bearer s3cret2",
            "Bearers3cret",
            "s3cret",
        ] {
            let (status, _, _) = call(&mut r, Method::GET, Some(bad)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        for good in ["Bearer s3cret", "bearer  s3cret", "BEARER s3cret"] {
            assert_eq!(
                call(&mut r, Method::PUT, Some(good)).await,
                (StatusCode::OK, None, "put".to_string()),
                "{good}"
            );
        }
    }

    #[tokio::test]
    async fn writes_only_lets_reads_through() {
        let mut r = router(require_bearer(BearerToken::new("t").unwrap()).writes_only());
        assert_eq!(call(&mut r, Method::GET, None).await.0, StatusCode::OK);
        assert_eq!(
            call(&mut r, Method::PUT, None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&mut r, Method::PUT, Some("Bearer t")).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn guards_a_single_method_route() {
        use axum::handler::Handler as _;
        let auth = require_bearer(BearerToken::new("t").unwrap());
        let mut r: Router = Router::new().route(
            "/p",
            get(|| async { "got" }).put((|| async { "put" }).layer(auth)),
        );
        assert_eq!(call(&mut r, Method::GET, None).await.0, StatusCode::OK);
        assert_eq!(
            call(&mut r, Method::PUT, None).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn tokens_are_validated_and_read_from_private_files() {
        assert!(BearerToken::new("").is_err());
        assert!(BearerToken::new("a b").is_err());
        assert!(BearerToken::new(&"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "abc123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = BearerToken::from_file(&p).unwrap();
        assert!(t.matches(b"abc123"));
        assert!(!t.matches(b"abc123\n"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = BearerToken::from_file(&p).unwrap_err();
        assert!(
            e.to_string().contains("accessible by group or others"),
            "{e}"
        );
        std::fs::write(&p, "\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(BearerToken::from_file(&p)
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }
}

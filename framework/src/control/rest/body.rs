//! A `PUT` body into the JSON document, as upstream's clients send it: `json=<document>`
//! (`curl -d json='{…}'`, form-encoded or raw), or a plain JSON body (`gopher-ctl`,
//! `Content-Type: application/json`).

use axum::http::{header, HeaderMap, StatusCode};
use serde_json::Value;

use super::{Failure, MAX_BODY_BYTES};

/// Deepest JSON nesting accepted (upstream documents need 4).
pub const MAX_DEPTH: usize = 16;

/// The document in `body`.
pub fn document(headers: &HeaderMap, body: &[u8]) -> Result<Value, Failure> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Failure {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body larger than {MAX_BODY_BYTES} bytes"),
        });
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| Failure::bad("Bad request: the body is not UTF-8"))?;
    let text = text.trim_start();
    let json_text: std::borrow::Cow<'_, str> = if let Some(rest) = text.strip_prefix("json=") {
        let rest = rest.trim_end_matches(['\r', '\n']);
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        // curl -d sends the document as typed; --data-urlencode (or a browser form) encodes it.
        if form && !rest.trim_start().starts_with('{') {
            percent_decode(rest).map_err(Failure::bad)?.into()
        } else {
            rest.into()
        }
    } else if text.starts_with('{') {
        text.into()
    } else if text.is_empty() {
        return Err(Failure::bad("Bad request: empty body"));
    } else {
        return Err(Failure::bad(
            "Bad request: expected json=<document> or a JSON object",
        ));
    };
    check_depth(&json_text)?;
    serde_json::from_str(&json_text)
        .map_err(|e| Failure::bad(format!("Bad request: invalid JSON: {e}")))
}

/// Refuses nesting deeper than [`MAX_DEPTH`] before parsing (brackets outside strings).
fn check_depth(s: &str) -> Result<(), Failure> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in s.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Failure::bad(format!(
                        "Bad request: JSON nested deeper than {MAX_DEPTH} levels"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("Bad request: invalid percent-encoding")?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "Bad request: the body is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn form() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h
    }

    #[test]
    fn the_shapes_clients_send() {
        let want = serde_json::json!({"state": "running", "x": "a b"});
        let raw = br#"json={"state":"running","x":"a b"}"#;
        assert_eq!(document(&form(), raw).unwrap(), want);
        assert_eq!(document(&HeaderMap::new(), raw).unwrap(), want);
        let enc = b"json=%7B%22state%22%3A%22running%22%2C%22x%22%3A%22a+b%22%7D";
        assert_eq!(document(&form(), enc).unwrap(), want);
        let plain = br#"{"state":"running","x":"a b"}"#;
        assert_eq!(document(&HeaderMap::new(), plain).unwrap(), want);
        assert_eq!(
            document(&HeaderMap::new(), b"json={\"a\":1}\n").unwrap()["a"],
            1
        );
    }

    #[test]
    fn refusals() {
        let h = HeaderMap::new();
        assert!(document(&h, b"").unwrap_err().message.contains("empty"));
        assert!(document(&h, b"state=running").is_err());
        assert!(document(&h, b"json={nope")
            .unwrap_err()
            .message
            .contains("invalid JSON"));
        assert!(document(&form(), b"json=%ZZ").is_err());
        let deep = format!("json={}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(document(&h, deep.as_bytes())
            .unwrap_err()
            .message
            .contains("deeper"));
        // Brackets inside strings do not count.
        let s = format!("{{\"a\":\"{}\"}}", "[".repeat(100));
        assert!(document(&h, s.as_bytes()).is_ok());
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            document(&h, &big).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}

//! API names for `l7_rpc_api`: templating of HTTP paths, so that `/users/123` and
//! `/users/456` count as one API (`/users/{id}`) and the number of distinct names stays small.

/// Most path segments kept; a longer path ends in `/...`.
pub const MAX_SEGMENTS: usize = 8;

/// What replaces an identifier segment.
const ID: &str = "{id}";

/// The templated form of an HTTP path (without query string): segments that are identifiers
/// become `{id}` — numbers, UUIDs (8-4-4-4-12 hex digits), hex strings of at least 8 characters
/// with a digit, and alphanumeric strings of at least 16 characters with both digits and letters.
/// At most [`MAX_SEGMENTS`] segments are kept (then `/...`); the result always starts with `/`
/// (an empty path is `/`). The result is at most `path.len() + 3 * MAX_SEGMENTS + 5` bytes.
pub fn template_path(path: &str) -> String {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let mut out = String::with_capacity(path.len() + 1);
    for (i, segment) in rest.split('/').enumerate() {
        if i == MAX_SEGMENTS {
            out.push_str("/...");
            break;
        }
        out.push('/');
        out.push_str(if is_id(segment) { ID } else { segment });
    }
    out
}

/// Whether a path segment names one resource rather than a kind of them.
fn is_id(segment: &str) -> bool {
    let s = segment.as_bytes();
    if s.is_empty() {
        return false;
    }
    let digits = s.iter().any(u8::is_ascii_digit);
    let all_digits = s.iter().all(u8::is_ascii_digit);
    let all_hex = s.iter().all(u8::is_ascii_hexdigit);
    let all_alnum = s.iter().all(u8::is_ascii_alphanumeric);
    let letters = s.iter().any(u8::is_ascii_alphabetic);
    all_digits
        || is_uuid(s)
        || (all_hex && digits && s.len() >= 8)
        || (all_alnum && digits && letters && s.len() >= 16)
}

/// Whether `s` is a UUID: hex digits grouped 8-4-4-4-12.
fn is_uuid(s: &[u8]) -> bool {
    let groups = [8usize, 4, 4, 4, 12];
    let mut parts = s.split(|&b| b == b'-');
    for want in groups {
        match parts.next() {
            Some(p) if p.len() == want && p.iter().all(u8::is_ascii_hexdigit) => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(
            template_path("/users/123/orders/9f1c2d3e-4b5a-6c7d-8e9f-0a1b2c3d4e5f"),
            "/users/{id}/orders/{id}"
        );
        assert_eq!(template_path(""), "/");
        assert_eq!(template_path("/"), "/");
        assert_eq!(template_path("/api/v1/items"), "/api/v1/items");
        assert_eq!(template_path("/blob/deadbeef01"), "/blob/{id}");
        assert_eq!(template_path("/blob/deadbeef"), "/blob/deadbeef");
        assert_eq!(template_path("/s/aB3dE5gH7jK9mN1p"), "/s/{id}");
        assert_eq!(template_path("/s/configuration_v2"), "/s/configuration_v2");
        assert_eq!(template_path("/a/b/"), "/a/b/");
        assert_eq!(
            template_path("/1/2/3/4/5/6/7/8/9/10"),
            "/{id}/{id}/{id}/{id}/{id}/{id}/{id}/{id}/..."
        );
        assert_eq!(template_path("relative/7"), "/relative/{id}");
    }

    proptest! {
        #[test]
        fn bounded_and_no_numeric_segment(path in "(/[a-zA-Z0-9._-]{0,20}){0,12}") {
            let t = template_path(&path);
            prop_assert!(t.len() <= path.len() + 3 * MAX_SEGMENTS + 5);
            prop_assert!(t.starts_with('/'));
            for seg in t.split('/') {
                prop_assert!(seg.is_empty() || !seg.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
}

//! API names for `l7_rpc_api`: templating of HTTP paths (placeholder).

/// The templated form of an HTTP path (placeholder: unchanged).
pub fn template_path(path: &str) -> String {
    path.to_string()
}

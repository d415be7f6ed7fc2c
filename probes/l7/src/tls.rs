//! Which libssl the SSL hooks are attached to (`support_ssl`): the libssl each traced process
//! maps ([`probe_sdk::bpf::uprobe_libs`]: one set per process with an include snooper, else one
//! per library file).

use probe_sdk::bpf::uprobe_libs::LibHooks;

/// The TLS hooks' targets: libssl (`libssl.so.1.1`, `libssl.so.3`, …).
pub fn tls_hooks() -> LibHooks {
    LibHooks::new("libssl", |name| name.starts_with("libssl.so"))
}

//! BPF build helper.

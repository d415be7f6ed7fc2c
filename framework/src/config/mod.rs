//! `gala-gopher.conf` loading (libconfig syntax) into typed structs.

pub mod fake_cri;

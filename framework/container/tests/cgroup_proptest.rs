//! The cgroup parser never panics on arbitrary text, and what it returns is in the text.

use container_info::cgroup;
use proptest::prelude::*;

const ID: &str = "3f1c2b7d9e8a4c6b5d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e";

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("docker".to_string()),
        Just("kubepods".to_string()),
        Just("kubepods.slice".to_string()),
        Just(format!("docker-{ID}.scope")),
        Just(format!("crio-conmon-{ID}.scope")),
        Just(format!("libpod-{ID}")),
        Just(format!("a.slice:cri-containerd:{ID}")),
        Just("kubepods-burstable-pod0b6f1b0e_2a3c_4d5e_8f90_123456789abc.slice".to_string()),
        Just("pod0b6f1b0e-2a3c-4d5e-8f90-123456789abc".to_string()),
        Just(ID.to_string()),
        "[a-f0-9:.\\-_é]{0,70}",
        any::<String>(),
    ]
}

fn line() -> impl Strategy<Value = String> {
    (
        "[0-9]{0,2}",
        prop_oneof![
            Just(""),
            Just("memory"),
            Just("cpu,cpuacct"),
            Just("name=systemd")
        ],
        proptest::collection::vec(component(), 0..6),
    )
        .prop_map(|(h, c, comps)| format!("{h}:{c}:/{}", comps.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = cgroup::parse(&text);
    }

    #[test]
    fn cgroup_like_text_never_panics_and_ids_come_from_the_text(
        lines in proptest::collection::vec(line(), 0..20)
    ) {
        let text = lines.join("\n");
        if let Some(r) = cgroup::parse(&text) {
            prop_assert_eq!(r.id.len(), 64);
            prop_assert!(r.id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            prop_assert!(text.contains(&r.id));
            prop_assert!(text.contains(&r.cgroup_path));
            if let Some(uid) = &r.pod_uid {
                prop_assert!(uid.len() == 32 || uid.len() == 36);
            }
        }
    }
}

//! The `-info` action, which containerd 2.x runs to learn a runtime's
//! features (`RuntimeInfo`, as for `runc features`). Its CRI plugin reads
//! them for every handler since 2.4 (before, only for runc): `rro` among the
//! mount options makes it tell kubelet that the handler supports recursive
//! read-only mounts.

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::introspection::RuntimeInfo;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasmtime-v1");

#[test]
fn info_names_the_runtime_and_the_features_it_applies() {
    let out = std::process::Command::new(SHIM)
        .arg("-info")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(info.name, "io.containerd.wasmtime.v1");
    let features = info.features.as_ref().expect("features");
    assert_eq!(
        features.type_url,
        "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    );
    let doc: serde_json::Value = serde_json::from_slice(&features.value).unwrap();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let options = strings(&doc["mountOptions"]);
    for option in ["rro", "rbind", "ro", "nosuid", "rshared"] {
        assert!(options.iter().any(|o| o == option), "{option}: {options:?}");
    }
    let namespaces = strings(&doc["linux"]["namespaces"]);
    assert!(namespaces.iter().any(|n| n == "pid"), "{namespaces:?}");
    // No user namespaces: the CRI must not offer them for this handler.
    assert!(!namespaces.iter().any(|n| n == "user"), "{namespaces:?}");
    assert_eq!(doc["linux"]["seccomp"]["enabled"], true);
}

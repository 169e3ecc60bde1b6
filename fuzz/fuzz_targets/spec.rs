//! A bundle's config.json → everything the shim and the child derive from
//! it before they act: clone flags, the child's whole configuration
//! (mounts, devices, seccomp, capabilities, rlimits, sysctls…), the
//! cgroup path, the pod group. Refusals are fine; panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(data) else {
        return;
    };
    let _ = executor::spec::clone_flags(&spec);
    let _ = executor::spec::child_config(&spec, std::path::Path::new("/run/bundle"));
    let _ = executor::spec::cgroups_path(&spec);
    let _ = executor::spec::pid_namespace_path(&spec);
    let _ = executor::spec::group(&spec);
    let _ = executor::spec::wants_terminal(&spec);
});

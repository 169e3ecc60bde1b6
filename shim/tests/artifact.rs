//! End-to-end tests of images whose Wasm module is a layer of its own, which
//! the shim reads from containerd's content store (`shim/src/artifact/`):
//!
//! - the CNCF Wasm OCI artifacts `hello-artifact` (`application/wasm`
//!   layer) and `exit-artifact` (the older bytecodealliance layer type):
//!   config `application/vnd.wasm.config.v0+json`, which no `ctr run`
//!   accepts, so they run through the CRI;
//! - `hello-wasm-layer` and `exit-wasm-layer`: the same layers under an OCI
//!   image config (runwasi's older form), which `ctr run` runs.
//!
//! containerd unpacks neither before 1.7.7 ("mismatched image rootfs and
//! manifest layers"); on such a containerd the tests check that refusal.

mod common;

use std::process::Output;

use common::cri::api::{self, ContainerConfig, ContainerState, NamespaceMode};
use common::cri::{Cri, Pod, container_log, cri, log_lines};
use common::{Containerd, NAMESPACE, containerd, containerd_version, images_dir};

/// The first containerd that unpacks images with non-tar layers (#9149).
const WASM_LAYERS_SINCE: (u32, u32, u32) = (1, 7, 7);
/// What containerd before 1.7.7 says of an image with a Wasm layer.
const MISMATCH: &str = "mismatched image rootfs and manifest layers";
/// What every ctr says when asked to run a CNCF artifact.
const UNKNOWN_CONFIG: &str = "unknown image config media type application/vnd.wasm.config.v0+json";

fn unpacks_wasm_layers() -> bool {
    containerd_version() >= WASM_LAYERS_SINCE
}

/// `ctr images import --all-platforms [extra] <name>.tar` into `namespace`.
fn import(ctrd: &Containerd, namespace: &str, name: &str, extra: &[&str]) -> Output {
    let tar = images_dir().join(format!("{name}.tar"));
    let mut args = vec!["images", "import", "--all-platforms"];
    args.extend_from_slice(extra);
    args.push(tar.to_str().unwrap());
    ctrd.ctr_in(namespace, &args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The container ids that `ctr containers ls -q` lists in the ctr namespace.
fn containers(ctrd: &Containerd) -> Vec<String> {
    let out = ctrd.ctr(&["containers", "ls", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn wasm_layers_under_an_oci_config_run_under_ctr() {
    let Some(ctrd) = containerd() else { return };
    if !unpacks_wasm_layers() {
        // The import stores the image but cannot unpack it; ctr run tries
        // again, fails the same way and makes no container.
        for name in ["hello-wasm-layer", "exit-wasm-layer"] {
            let out = import(&ctrd, NAMESPACE, name, &[]);
            assert!(!out.status.success(), "import {name} unpacked on 1.6");
            assert!(stderr(&out).contains(MISMATCH), "{}", stderr(&out));
        }
        let run = ctrd.run("exit-wasm-layer", "layer-1-6", &["/exit.wasm", "42"]);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stderr.contains(MISMATCH), "{run:?}");
        assert!(containers(&ctrd).is_empty());
        ctrd.assert_clean("layer-1-6");
        return;
    }
    ctrd.import("hello-wasm-layer");
    ctrd.import("exit-wasm-layer");
    // The image's entrypoint is the guest's argv[0]; nothing of that name
    // is in the (empty) rootfs.
    let run = ctrd.run("hello-wasm-layer", "hello-layer", &[]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "hello from wasm\n"),
        "{run:?}"
    );
    ctrd.assert_clean("hello-layer");
    for (id, args, code) in [
        ("exit-layer-42", &["/exit.wasm", "42"][..], 42),
        ("exit-layer-7", &["anything", "7"][..], 7),
        ("exit-layer-entrypoint", &[][..], 0),
    ] {
        let run = ctrd.run("exit-wasm-layer", id, args);
        assert_eq!(run.code, code, "{id}: {run:?}");
        ctrd.assert_clean(id);
    }
    assert!(containers(&ctrd).is_empty());
}

#[test]
fn ctr_runs_no_cncf_artifact() {
    let Some(ctrd) = containerd() else { return };
    let out = import(&ctrd, NAMESPACE, "hello-artifact", &[]);
    if unpacks_wasm_layers() {
        assert!(out.status.success(), "{}", stderr(&out));
    } else {
        assert!(!out.status.success(), "import unpacked on 1.6");
        assert!(stderr(&out).contains(MISMATCH), "{}", stderr(&out));
        // Without the unpack, the import succeeds.
        let out = import(&ctrd, NAMESPACE, "exit-artifact", &["--no-unpack"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Without --all-platforms the wasm/wasip1 manifest is filtered out.
    let tar = images_dir().join("exit-artifact.tar");
    let out = ctrd.ctr(&["images", "import", tar.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("image might be filtered out"),
        "{}",
        stderr(&out)
    );
    // ctr reads only OCI and Docker image configs (1.6 fails earlier, at
    // the unpack): no container is made, the shim is never started.
    let run = ctrd.run("hello-artifact", "cncf-ctr", &[]);
    let expected = match unpacks_wasm_layers() {
        true => UNKNOWN_CONFIG,
        false => MISMATCH,
    };
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(expected), "{run:?}");
    assert!(containers(&ctrd).is_empty());
    ctrd.assert_clean("cncf-ctr");
}

/// `config` running `command` (a CNCF artifact's config has no entrypoint).
fn with_command(mut config: ContainerConfig, command: &[&str]) -> ContainerConfig {
    config.command = command.iter().map(|s| s.to_string()).collect();
    config
}

fn run_to_exit(cri: &Cri, pod: &Pod, config: ContainerConfig) -> api::ContainerStatus {
    let id = cri.run(pod, config);
    cri.wait_state(&id, ContainerState::ContainerExited)
}

/// Imports test image `name` into the CRI's namespace, on 1.6 without the
/// unpack that fails there, and waits until the CRI sees it.
fn cri_import(cri: &Cri, name: &str) {
    let extra: &[&str] = match unpacks_wasm_layers() {
        true => &[],
        false => &["--no-unpack"],
    };
    let out = import(cri.ctrd(), common::cri::K8S_NAMESPACE, name, extra);
    assert!(out.status.success(), "import {name}: {}", stderr(&out));
    common::wait_for(
        &format!("the CRI to see image {name}"),
        std::time::Duration::from_secs(10),
        || {
            let req = api::ImageStatusRequest {
                image: Some(common::cri::image_spec(name)),
                verbose: false,
            };
            cri.call(cri.images().image_status(req))
                .is_ok_and(|s| s.image.is_some())
        },
    );
}

/// The CRI makes the container from the image without unpacking it (an
/// empty snapshot: the config lists no diff IDs), so this runs on 1.6 too
/// once ctr has stored the image.
#[test]
fn cncf_artifacts_run_through_the_cri() {
    let Some(cri) = cri() else { return };
    cri_import(&cri, "hello-artifact");
    cri_import(&cri, "exit-artifact");
    let pod = cri.new_pod("artifact", NamespaceMode::Node);

    // The CRI takes the process from the config, and this one has none.
    let bare = pod.container("bare", "hello-artifact", &[]);
    let req = api::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(bare),
        sandbox_config: Some(pod.config.clone()),
    };
    let err = cri
        .call(cri.runtime().create_container(req))
        .expect_err("a container without a command");
    assert!(err.message().contains("no command specified"), "{err:?}");

    let hello = with_command(
        pod.container("hello", "hello-artifact", &[]),
        &["/hello.wasm"],
    );
    let status = run_to_exit(&cri, &pod, hello);
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (0, "Completed"),
        "{status:?}"
    );
    let log = container_log(&pod, "hello");
    assert_eq!(log_lines(&log, "stdout"), ["hello from wasm"], "{log}");

    let exit = with_command(
        pod.container("exit", "exit-artifact", &["42"]),
        &["exit.wasm"],
    );
    let status = run_to_exit(&cri, &pod, exit);
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (42, "Error"),
        "{status:?}"
    );
    cri.remove_pod(&pod);
    cri.assert_clean();
}

/// `ctr images tag --force <from> <to>` in the CRI's namespace: the name
/// `to` now names `from`'s content.
fn retag(cri: &Cri, from: &str, to: &str) {
    let args = ["images", "tag", "--force", from, to];
    let out = cri.ctrd().ctr_in(common::cri::K8S_NAMESPACE, &args);
    assert!(out.status.success(), "tag {from} {to}: {}", stderr(&out));
}

/// The CRI's image ID of test image `name`, once it has one.
fn cri_image_id(cri: &Cri, name: &str) -> Option<String> {
    let req = api::ImageStatusRequest {
        image: Some(common::cri::image_spec(name)),
        verbose: false,
    };
    let status = cri.call(cri.images().image_status(req)).ok()?;
    status.image.map(|i| i.id)
}

fn start(cri: &Cri, id: &str) -> Result<(), tonic::Status> {
    let req = api::StartContainerRequest {
        container_id: id.into(),
    };
    cri.call(cri.runtime().start_container(req)).map(|_| ())
}

/// A container runs the image it was created from, by its digest, not
/// whatever its image's name names when it starts: a retag between
/// CreateContainer and StartContainer does not change its module, and
/// when no image holds the old content any more Start fails saying so.
#[test]
fn a_retagged_image_does_not_change_a_created_container() {
    let Some(cri) = cri() else { return };
    cri_import(&cri, "hello-artifact");
    cri_import(&cri, "exit-artifact");
    let (hello, exit) = (
        common::image("hello-artifact"),
        common::image("exit-artifact"),
    );
    // The old content stays under a second name, as a pull keeps an
    // image under its repo digest and ID.
    let kept = format!("{hello}-kept");
    retag(&cri, &hello, &kept);
    let pod = cri.new_pod("retag", NamespaceMode::Node);

    let before = with_command(
        pod.container("before", "hello-artifact", &[]),
        &["/hello.wasm"],
    );
    let before = cri.create(&pod, before);
    retag(&cri, &exit, &hello);
    start(&cri, &before).unwrap_or_else(|e| panic!("{e:?}\n{}", cri.log_tail()));
    let status = cri.wait_state(&before, ContainerState::ContainerExited);
    assert_eq!(status.exit_code, 0, "{status:?}");
    let log = container_log(&pod, "before");
    assert_eq!(log_lines(&log, "stdout"), ["hello from wasm"], "{log}");
    let logged = cri
        .ctrd()
        .wait_log("the retag", |l| l.contains("was retagged"));
    assert!(logged.contains(&kept), "the image run is named");

    // Made from what the name names now (the exit module), then the name
    // and every other name of that content move away.
    let exit_id = cri_image_id(&cri, "exit-artifact");
    common::wait_for(
        "the CRI to see the retag",
        std::time::Duration::from_secs(10),
        || cri_image_id(&cri, "hello-artifact") == exit_id,
    );
    let after = with_command(
        pod.container("after", "hello-artifact", &["7"]),
        &["exit.wasm"],
    );
    let after = cri.create(&pod, after);
    retag(&cri, &kept, &hello);
    // The CRI keeps an image under its ID too: that name goes as well.
    let exit_id = exit_id.expect("the CRI's ID of the exit image");
    let rm = ["images", "rm", &exit, &exit_id];
    let out = cri.ctrd().ctr_in(common::cri::K8S_NAMESPACE, &rm);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = start(&cri, &after).expect_err("a start from content no image holds");
    assert!(
        err.message()
            .contains("no longer names the image the container was created from"),
        "{err:?}"
    );
    cri.ctrd().wait_log("the refusal", |l| {
        l.contains(&after) && l.contains("no longer names the image")
    });
    cri.remove_pod(&pod);
    cri.assert_clean();
}

#[test]
fn containerd_versions_are_parsed() {
    use common::parse_containerd_version as parse;
    let cases = [
        (
            "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3",
            (1, 6, 20),
        ),
        (
            "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1",
            (1, 7, 24),
        ),
        (
            "containerd github.com/containerd/containerd/v2 2.1.9+unknown ",
            (2, 1, 9),
        ),
        ("containerd x v1.7.7", (1, 7, 7)),
    ];
    for (text, version) in cases {
        assert_eq!(parse(text), Some(version), "{text}");
    }
    assert_eq!(parse("containerd"), None);
    assert!((1, 6, 20) < WASM_LAYERS_SINCE && (1, 7, 24) >= WASM_LAYERS_SINCE);
}

//! critest, the CRI validation suite Kubernetes holds container runtimes
//! to (cri-tools 1.34), run against a private containerd twice: once with
//! the `runc` handler and once with this shim's. The test fails if the shim
//! fails a spec that runc passes on the same containerd, and prints both
//! lists.
//!
//! Nothing leaves the machine: critest's images are stand-ins that
//! test-images makes from Debian's binaries (`critest_images`), pushed to a
//! docker-registry on loopback, which containerd's `hosts.toml` names as
//! the server of registry.k8s.io, gcr.io and docker.io. Pods get a CNI
//! bridge of the fixture's own that the host reaches (critest fetches
//! pages from pod IPs and host ports) and that the fixture removes.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::cri::{Cri, CriOptions, HANDLER};
use common::registry::Registry;
use common::tools::{cri_tool, required, unpacked};

/// The registries whose names critest pulls.
const REGISTRIES: &[&str] = &["registry.k8s.io", "gcr.io", "docker.io"];
/// The pods' subnet, apart from the other CRI fixtures' isolated one.
const SUBNET: &str = "198.18.64.0/24";
/// critest gives a spec up after this; kubelet's own call timeout is 2 min.
const SERVICE_TIMEOUT: &str = "120s";
/// Fewer specs than this passing under runc means the set-up is broken
/// (images, registry, network), not the runtime: a comparison with so
/// little would prove nothing. runc passes 84 to 92 of them here.
const RUNC_PASSES_AT_LEAST: usize = 75;

#[test]
fn critest_passes_wherever_runc_passes() {
    let Some(critest) = cri_tool("critest") else {
        return;
    };
    let Some(nginx) = required(
        unpacked("nginx"),
        "Debian's nginx is missing from .dev/versions/nginx \
         (scripts/containerd-versions.sh unpacks it; make versions runs that)",
    ) else {
        return;
    };
    if !common::can_run() {
        return;
    }
    let Some(registry) = Registry::start() else {
        return;
    };
    let hosts = tempfile::Builder::new()
        .prefix("critest-hosts-")
        .tempdir_in("/tmp")
        .unwrap();
    let options = CriOptions {
        registry_hosts: Some(registry.hosts_dir(hosts.path(), REGISTRIES)),
        routed_subnet: Some(SUBNET),
    };
    let Some(cri) = common::cri::cri_with(options) else {
        return;
    };
    push_stand_ins(&cri, &registry, &nginx);

    let runc = run_critest(&critest, &cri, "runc");
    let ours = run_critest(&critest, &cri, HANDLER);
    // Written to stdout itself, past the test harness's capture, so that
    // both lists are in `make test`'s output whether the test passes or not.
    let both = format!(
        "containerd {:?}\n{}\n{}\n",
        common::containerd_version(),
        runc.summary("runc"),
        ours.summary(HANDLER)
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), both.as_bytes());

    assert!(
        runc.passed.len() >= RUNC_PASSES_AT_LEAST,
        "critest passed only {} specs under runc: the set-up is broken\n{}",
        runc.passed.len(),
        runc.failures()
    );
    let regressions: Vec<&String> = ours.failed.intersection(&runc.passed).collect();
    assert!(
        regressions.is_empty(),
        "the shim fails {} spec(s) that runc passes on containerd {:?}:\n  {}\n\n{}",
        regressions.len(),
        common::containerd_version(),
        regressions
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        ours.failures()
    );
}

/// Writes each stand-in image and pushes it under the name critest pulls.
fn push_stand_ins(cri: &Cri, registry: &Registry, nginx: &Path) {
    let dir = cri.dir().join("critest-images");
    std::fs::create_dir_all(&dir).unwrap();
    let images = test_images::critest_images(nginx).expect("make critest's images");
    for (i, (reference, image)) in images.iter().enumerate() {
        let archive = dir.join(format!("{i}.tar"));
        let bytes = test_images::image_archive_as(image, reference).expect("image archive");
        std::fs::write(&archive, bytes).unwrap();
        registry.push(cri.ctrd(), &archive, reference);
    }
}

/// What one critest run reported, by spec.
struct Report {
    passed: BTreeSet<String>,
    failed: BTreeSet<String>,
    skipped: usize,
    /// Each failed spec with its failure's message and place.
    failures: Vec<(String, String)>,
}

impl Report {
    /// The counts and each failed spec with the first line of its failure.
    fn summary(&self, handler: &str) -> String {
        let list: String = self
            .failures
            .iter()
            .map(|(spec, why)| format!("\n    {spec}\n      {}", why.lines().next().unwrap_or("")))
            .collect();
        format!(
            "critest under {handler}: {} passed, {} failed, {} skipped\n  failed:{list}",
            self.passed.len(),
            self.failed.len(),
            self.skipped,
        )
    }

    fn failures(&self) -> String {
        self.failures
            .iter()
            .map(|(spec, why)| format!("--- {spec}\n{why}\n"))
            .collect()
    }
}

/// Runs critest against the fixture's CRI under `handler` and reads its
/// JSON report. critest's own exit status says only whether any spec
/// failed, which the report says spec by spec.
fn run_critest(critest: &Path, cri: &Cri, handler: &str) -> Report {
    let socket = format!("unix://{}", cri.dir().join("containerd.sock").display());
    let report = cri.dir().join(format!("critest-{handler}.json"));
    let log = cri.dir().join(format!("critest-{handler}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let status = Command::new(critest)
        .args(["-runtime-endpoint", &socket, "-image-endpoint", &socket])
        .args(["-runtime-handler", handler])
        .args(["-runtime-service-timeout", SERVICE_TIMEOUT])
        .arg("-ginkgo.no-color")
        .arg(format!("-ginkgo.json-report={}", report.display()))
        .current_dir(cri.dir())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .expect("run critest");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "critest under {handler} ({status}) wrote no report {}: {e}\n{}",
            report.display(),
            tail(&log)
        )
    });
    parse_report(&text).unwrap_or_else(|e| panic!("critest's report {}: {e}", report.display()))
}

/// Reads a ginkgo v2 JSON report: the specs (`It` nodes) and their states.
/// A failure outside the specs (a suite node) counts as a failed spec of
/// its own name, so a broken suite cannot look like a passing one.
fn parse_report(text: &str) -> Result<Report, String> {
    let suites: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut report = Report {
        passed: BTreeSet::new(),
        failed: BTreeSet::new(),
        skipped: 0,
        failures: Vec::new(),
    };
    let specs = suites
        .as_array()
        .ok_or("not a list of suites")?
        .iter()
        .flat_map(|suite| suite["SpecReports"].as_array().cloned().unwrap_or_default());
    for spec in specs {
        let mut name: Vec<&str> = spec["ContainerHierarchyTexts"]
            .as_array()
            .map(|texts| texts.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        let leaf = spec["LeafNodeText"].as_str().unwrap_or_default();
        let kind = spec["LeafNodeType"].as_str().unwrap_or_default();
        name.push(if leaf.is_empty() { kind } else { leaf });
        let name = name.join(" ");
        let state = spec["State"].as_str().unwrap_or_default();
        match (kind, state) {
            ("It", "passed") => {
                report.passed.insert(name);
            }
            (_, "passed" | "skipped" | "pending") => report.skipped += usize::from(kind == "It"),
            _ => {
                let failure = &spec["Failure"];
                let why = format!(
                    "{state}: {}\nat {}:{}",
                    failure["Message"].as_str().unwrap_or_default(),
                    failure["Location"]["FileName"].as_str().unwrap_or_default(),
                    failure["Location"]["LineNumber"]
                );
                report.failures.push((name.clone(), why));
                report.failed.insert(name);
            }
        }
    }
    Ok(report)
}

fn tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[test]
fn reports_are_read_spec_by_spec_and_suite_failures_count() {
    let text = r#"[{"SpecReports": [
        {"ContainerHierarchyTexts": ["[k8s.io] Image Manager"], "LeafNodeType": "It",
         "LeafNodeText": "public image should be pulled", "State": "passed"},
        {"ContainerHierarchyTexts": ["[k8s.io] Streaming"], "LeafNodeType": "It",
         "LeafNodeText": "runtime should support exec", "State": "failed",
         "Failure": {"Message": "boom", "Location": {"FileName": "x.go", "LineNumber": 3}}},
        {"ContainerHierarchyTexts": ["[k8s.io] Security Context"], "LeafNodeType": "It",
         "LeafNodeText": "apparmor", "State": "skipped"},
        {"ContainerHierarchyTexts": null, "LeafNodeType": "BeforeSuite",
         "LeafNodeText": "", "State": "passed"},
        {"ContainerHierarchyTexts": null, "LeafNodeType": "AfterSuite",
         "LeafNodeText": "", "State": "panicked", "Failure": {"Message": "p"}}
    ]}]"#;
    let report = parse_report(text).unwrap();
    assert_eq!(
        report.passed,
        BTreeSet::from(["[k8s.io] Image Manager public image should be pulled".to_owned()])
    );
    assert_eq!(
        report.failed,
        BTreeSet::from([
            "[k8s.io] Streaming runtime should support exec".to_owned(),
            "AfterSuite".to_owned()
        ])
    );
    assert_eq!(report.skipped, 1);
    assert!(
        report.failures()[..].contains("boom\nat x.go:3"),
        "{}",
        report.failures()
    );
    assert!(parse_report("{}").is_err());
}

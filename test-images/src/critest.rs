//! Stand-ins for the images that critest (cri-tools 1.34's CRI validation suite) pulls by name,
//! made from Debian's binaries: the host's static busybox with every applet, and nginx as
//! Debian's package unpacked under `.dev/versions/nginx` (scripts/containerd-versions.sh) with
//! the host's copies of its libraries (and util-linux's `ipcs`, which Debian's busybox lacks). Each image holds what critest's specs use of the
//! original: the same user and group entries and `User` fields, nginx with worker processes
//! and its pid file, an httpd that logs its name, a setuid program that prints its effective
//! uid, and images that differ or match by content as the image specs expect. The one image
//! critest pulls by a digest of the upstream build cannot be matched by any rebuild; that spec
//! fails for every handler alike.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::entry::Entry;
use crate::{BUSYBOX_PATH, ImageSpec, NNP_ELF, Process, busybox_image};

/// Where critest's e2e images live, and where its own test images do.
const E2E: &str = "registry.k8s.io/e2e-test-images/";
const CRI_TOOLS: &str = "gcr.io/k8s-staging-cri-tools/";

/// The port of the host-network nginx image (`images/hostnet-nginx` in cri-tools).
const HOSTNET_NGINX_PORT: u16 = 12003;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
    www-data:x:33:33:www-data:/var/www:/bin/false\n\
    nobody:x:65534:65534:nobody:/home:/bin/false\n";
const GROUP: &str = "root:x:0:\ndaemon:x:1:\nwww-data:x:33:\nnogroup:x:65534:\n";

/// Every stand-in as (the reference critest pulls, the image), in a fixed order.
pub fn critest_images(nginx_root: &Path) -> Result<Vec<(String, ImageSpec)>> {
    let base = busybox_base()?;
    let nginx = NginxFiles::read(nginx_root)?;
    let mut images = vec![
        (format!("{E2E}busybox:1.29-2"), base.clone()),
        (format!("{E2E}nginx:1.14-2"), nginx.image(&base, 80)),
        (
            format!("{CRI_TOOLS}hostnet-nginx-amd64:latest"),
            nginx.image(&base, HOSTNET_NGINX_PORT),
        ),
        (format!("{E2E}httpd:2.4.39-4"), httpd(&base)),
        (format!("{E2E}nonewprivs:1.3"), nonewprivs(&base)),
        (
            format!("{CRI_TOOLS}test-image-predefined-group:latest"),
            predefined_group(&base),
        ),
    ];
    for (name, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:1004"),
        ("test-image-user-username-group", "www-data:1004"),
    ] {
        let mut image = base.clone();
        image.process.user = user.to_owned();
        images.push((format!("{CRI_TOOLS}{name}:latest"), image));
    }
    // As cri-tools' images/build makes them: each test-image-N has a file of its own name, so
    // they differ; the three tags of test-image-tags share one image, as do those of
    // test-image-tag.
    for (file, references) in [
        ("test-image-1", &["test-image-1:latest"][..]),
        ("test-image-2", &["test-image-2:latest"]),
        ("test-image-3", &["test-image-3:latest"]),
        ("test-image-latest", &["test-image-latest:latest"]),
        ("test-image-digest", &["test-image-digest:latest"]),
        (
            "test-image-tag",
            &["test-image-tag:test", "test-image-tag:all"],
        ),
        (
            "same-image",
            &[
                "test-image-tags:1",
                "test-image-tags:2",
                "test-image-tags:3",
            ],
        ),
    ] {
        let image = with_entries(&base, vec![Entry::file(&format!("/{file}"), "", 0o644)]);
        for reference in references {
            images.push((format!("{CRI_TOOLS}{reference}"), image.clone()));
        }
    }
    Ok(images)
}

/// busybox with a link for every applet it has, the usual users and groups, `/tmp`, and no
/// entrypoint: `Cmd` is `sh`, as in the busybox images critest's come from.
fn busybox_base() -> Result<ImageSpec> {
    let mut image = busybox_image()?;
    image.name = "critest-busybox".to_owned();
    let busybox = image
        .entries
        .iter()
        .find(|entry| entry.path == BUSYBOX_PATH)
        .cloned()
        .context("the busybox image lacks /bin/busybox")?;
    // Hard links, as in busybox's images: a path masked in one (critest masks /bin/ls) leaves
    // the others alone.
    let mut entries = vec![busybox];
    entries.extend(
        applets()?
            .iter()
            .filter(|applet| applet.as_str() != "busybox")
            .map(|applet| Entry::hard_link(&format!("/bin/{applet}"), BUSYBOX_PATH)),
    );
    // Debian's busybox has no `ipcs`, which critest runs to see a pod's IPC namespace:
    // util-linux's, with its libraries.
    let ipcs = Path::new(IPCS_PATH);
    entries.push(Entry::file(IPCS_PATH, read_host(ipcs)?, 0o755));
    for library in libraries(ipcs)? {
        entries.push(Entry::file(
            &library,
            read_host(Path::new(&library))?,
            0o755,
        ));
    }
    entries.extend([
        Entry::file("/etc/passwd", PASSWD, 0o644),
        Entry::file("/etc/group", GROUP, 0o644),
        Entry::dir("/tmp", 0o1777),
        Entry::dir("/root", 0o700),
        Entry::dir("/var/www", 0o755),
    ]);
    image.entries = entries;
    image.process = Process {
        entrypoint: Some(Vec::new()),
        cmd: vec!["sh".to_owned()],
        user: String::new(),
    };
    Ok(image)
}

/// Where util-linux's `ipcs` is on the host and in the images.
const IPCS_PATH: &str = "/usr/bin/ipcs";

fn read_host(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "cannot provide critest's images: failed to read {}",
            path.display()
        )
    })
}

/// The applets of the host's busybox, as `busybox --list` names them.
fn applets() -> Result<Vec<String>> {
    let output = Command::new(BUSYBOX_PATH)
        .arg("--list")
        .output()
        .with_context(|| format!("failed to run {BUSYBOX_PATH} --list"))?;
    if !output.status.success() {
        bail!("{BUSYBOX_PATH} --list failed: {}", output.status);
    }
    let list = String::from_utf8(output.stdout).context("busybox --list printed non-UTF-8")?;
    Ok(list
        .lines()
        .filter(|applet| !applet.is_empty() && !applet.contains('/'))
        .map(str::to_owned)
        .collect())
}

/// `base` with `entries` added, but for those whose path it has already (shared libraries).
fn with_entries(base: &ImageSpec, entries: Vec<Entry>) -> ImageSpec {
    let mut image = base.clone();
    for entry in entries {
        if !image.entries.iter().any(|have| have.path == entry.path) {
            image.entries.push(entry);
        }
    }
    image
}

/// Debian's nginx as the images need it: the binary, its libraries, its MIME types and
/// welcome page.
struct NginxFiles {
    entries: Vec<Entry>,
}

impl NginxFiles {
    fn read(root: &Path) -> Result<Self> {
        let binary = root.join("usr/sbin/nginx");
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| {
                format!(
                    "cannot provide critest's nginx images: failed to read {} \
                     (scripts/containerd-versions.sh unpacks Debian's nginx there)",
                    path.display()
                )
            })
        };
        let mut entries = vec![
            Entry::file("/usr/sbin/nginx", read(&binary)?, 0o755),
            Entry::file(
                "/etc/nginx/mime.types",
                read(&root.join("etc/nginx/mime.types"))?,
                0o644,
            ),
            Entry::file(
                "/usr/share/nginx/html/index.html",
                read(&root.join("usr/share/nginx/html/index.html"))?,
                0o644,
            ),
        ];
        for library in libraries(&binary)? {
            entries.push(Entry::file(
                &library,
                read_host(Path::new(&library))?,
                0o755,
            ));
        }
        Ok(Self { entries })
    }

    /// nginx serving its welcome page on `port`, with two worker processes (as www-data) under
    /// its master, the pid file at /var/run/nginx.pid, and its logs on the container's output.
    fn image(&self, base: &ImageSpec, port: u16) -> ImageSpec {
        let config = format!(
            "user www-data;\nworker_processes 2;\npid /var/run/nginx.pid;\n\
             error_log stderr notice;\nevents {{ worker_connections 64; }}\n\
             http {{\n    include /etc/nginx/mime.types;\n    access_log /dev/stdout;\n    \
             server {{\n        listen {port};\n        root /usr/share/nginx/html;\n        \
             index index.html;\n    }}\n}}\n"
        );
        let mut entries = self.entries.clone();
        entries.extend([
            Entry::file("/etc/nginx/nginx.conf", config, 0o644),
            Entry::dir("/var/log/nginx", 0o755),
            Entry::dir("/var/lib/nginx", 0o755),
            Entry::dir("/var/run", 0o755),
        ]);
        let mut image = with_entries(base, entries);
        image.process.cmd = ["nginx", "-g", "daemon off;"].map(str::to_owned).to_vec();
        image
    }
}

/// The host files `ldd` says `binary` needs, with the ELF interpreter.
fn libraries(binary: &Path) -> Result<Vec<String>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("failed to run ldd {}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    crate::ldd::needed_files(&text)
        .with_context(|| format!("cannot tell the libraries of {}", binary.display()))
}

/// busybox's httpd on port 80 with a page of its own; it names itself on its output first, as
/// Apache's httpd does in its first log line.
fn httpd(base: &ImageSpec) -> ImageSpec {
    const ROOT: &str = "/usr/local/apache2/htdocs";
    let mut image = with_entries(
        base,
        vec![Entry::file(
            &format!("{ROOT}/index.html"),
            "<html><body><h1>It works!</h1></body></html>\n",
            0o644,
        )],
    );
    image.process.cmd = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!("echo 'httpd: serving {ROOT} on port 80'; exec httpd -f -v -p 80 -h {ROOT}"),
    ];
    image
}

/// The setuid-root `nnp` program as the command, to run as another user.
fn nonewprivs(base: &ImageSpec) -> ImageSpec {
    let mut image = with_entries(
        base,
        vec![Entry::file("/usr/local/bin/nnp", NNP_ELF, 0o4755)],
    );
    image.process.cmd = vec!["/usr/local/bin/nnp".to_owned()];
    image
}

/// User 1000 (`default-user`), a member of group 50000 defined in the image's /etc/group.
fn predefined_group(base: &ImageSpec) -> ImageSpec {
    let mut image = base.clone();
    for entry in &mut image.entries {
        let extra = match entry.path.as_str() {
            "/etc/passwd" => "default-user:x:1000:1000::/home/default-user:/bin/sh\n",
            "/etc/group" => "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n",
            _ => continue,
        };
        if let crate::EntryKind::File(bytes) = &mut entry.kind {
            bytes.extend_from_slice(extra.as_bytes());
        }
    }
    image.entries.push(Entry::dir("/home/default-user", 0o755));
    image.process.user = "1000".to_owned();
    image
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_base_has_every_applet_and_runs_sh_without_an_entrypoint() {
        let Ok(base) = busybox_base() else {
            return; // busybox_image's own tests say why a host lacks it
        };
        let has = |path: &str| base.entries.iter().any(|entry| entry.path == path);
        for applet in ["sh", "pidof", "id", "httpd", "top", "hostname", "ls"] {
            assert!(has(&format!("/bin/{applet}")), "{applet}");
        }
        assert!(has(IPCS_PATH));
        assert_eq!(base.process.entrypoint, Some(Vec::new()));
        assert_eq!(base.process.cmd, ["sh"]);
        let archive = crate::image_archive_as(&base, "example.org/x:1").unwrap();
        assert!(!archive.is_empty());
    }

    #[test]
    fn the_predefined_group_image_puts_user_1000_in_group_50000() {
        let base = ImageSpec {
            entries: vec![
                Entry::file("/etc/passwd", PASSWD, 0o644),
                Entry::file("/etc/group", GROUP, 0o644),
            ],
            ..Default::default()
        };
        let image = predefined_group(&base);
        let group = match &image.entries[1].kind {
            crate::EntryKind::File(bytes) => String::from_utf8(bytes.clone()).unwrap(),
            other => panic!("{other:?}"),
        };
        assert!(group.ends_with("group-defined-in-image:x:50000:default-user\n"));
        assert_eq!(image.process.user, "1000");
    }
}

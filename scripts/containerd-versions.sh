#!/usr/bin/env bash
# Fetches other containerd releases, and a dockerd with its CLI, from newer
# Debian suites for the version tests, without installing anything: the
# packages are downloaded with apt-get through a private source list and
# private apt state and cache (the system's apt, dpkg database and its own
# containerd, bookworm's 1.6, stay as they are) and unpacked with dpkg -x.
#
#   scripts/containerd-versions.sh DEST_DIR
#
# Lays out, below DEST_DIR:
#   containerd-1.7.24/usr/bin/{containerd,ctr,containerd-shim-runc-v2,...}  trixie's containerd
#   containerd-2.1.9/usr/bin/{containerd,ctr,containerd-shim-runc-v2}        forky's containerd
#   docker/usr/sbin/{dockerd,docker-proxy}, docker/usr/bin/{docker,docker-init}
#                                                                            forky's docker.io and docker-cli
#   nginx/usr/sbin/nginx, nginx/usr/share/nginx/html, nginx/etc/nginx/mime.types
#                                                                            bookworm's nginx, for critest's
#                                                                            stand-in web server images
#   registry/usr/bin/docker-registry                                         bookworm's docker-registry, the
#                                                                            loopback registry critest pulls from
#   apt/                                                                     the private apt setup and its downloads
# and prints one line per unpacked folder. A folder is fetched once: its
# .packages stamp (the name=version of each package unpacked into it) is
# written last, and a folder with its stamp and binaries is kept as it is.
# Remove a folder to fetch it again.
#
# The binaries are Go programs linked against glibc >= 2.34 only, so they
# run on bookworm (glibc 2.36). containerd's own runtime dependencies are
# runc (only for its runc shim; bookworm's runc 1.1 is older than the 1.3
# forky ships beside containerd 2.1, which matters for runc containers, not
# for this shim) and, for CRI pod networking, the CNI plugins. dockerd also
# links libsystemd0, libcap2, libgcrypt20, liblzma5, libzstd1 and liblz4-1
# (all in a bookworm base system), and wants iptables unless it is started
# with --iptables=false --ip6tables=false (or --bridge=none); docker-init is
# tini-static, which this script unpacks beside it.
#
# Both suites are signed by keys that bookworm's debian-archive-keyring
# already holds (the bookworm and trixie archive keys sign trixie and forky),
# so apt checks the signatures as usual. If a later forky is signed by a key
# the installed keyring lacks, `apt-get update` fails with NO_PUBKEY: update
# debian-archive-keyring (bookworm-updates carries newer ones) rather than
# trusting the archive unsigned.
set -euo pipefail

dest=$(realpath -m "${1:?usage: containerd-versions.sh DEST_DIR}")
# Debian's archive as the system's apt sources name it (the first source
# of a release suite, one without a '-security' or '-updates' part), unless
# DEBIAN_MIRROR says otherwise.
system_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk '$1 == "deb" { for (i = 2; i < NF; i++) if ($i ~ /^https?:/ && $(i + 1) !~ /-/) { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             {
                 uri = ""; main = 0
                 for (i = 1; i <= NF; i++) {
                     n = split($i, w, " ")
                     if (w[1] == "URIs:") uri = w[2]
                     if (w[1] == "Suites:") for (j = 2; j <= n; j++) if (w[j] !~ /-/) main = 1
                 }
                 if (main && uri != "") { print uri; exit }
             }' "$f"
    done
}
mirror=${DEBIAN_MIRROR:-$(system_mirror | grep -m1 -E '/debian/?$' || true)}
if [ -z "$mirror" ]; then
    echo "containerd-versions: no Debian archive in the system's apt sources; set DEBIAN_MIRROR" >&2
    exit 1
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

# folder, suite, the upstream version the folder is named after, packages.
# The Debian version is whatever the suite has now; a different patch
# release is used and reported, a different minor release is an error
# (the folder's name would lie).
targets=(
    "containerd-1.7.24|trixie|1.7.24|containerd"
    "containerd-2.1.9|forky|2.1.9|containerd"
    "docker|forky||docker.io docker-cli tini-static"
    "nginx|bookworm||nginx nginx-common"
    "registry|bookworm||docker-registry"
)

apt_dir="$dest/apt"
apt_conf="$apt_dir/apt.conf"

# The binaries that must be in a folder for it to count as fetched.
binaries() {
    case "$1" in
    containerd-*) echo usr/bin/containerd usr/bin/ctr usr/bin/containerd-shim-runc-v2 ;;
    docker) echo usr/sbin/dockerd usr/bin/docker ;;
    nginx) echo usr/sbin/nginx ;;
    registry) echo usr/bin/docker-registry ;;
    esac
}

complete() {
    local dir="$dest/$1" bin
    [ -s "$dir/.packages" ] || return 1
    for bin in $(binaries "$1"); do
        [ -x "$dir/$bin" ] || return 1
    done
}

# Runs the folder's main binary and prints its version line.
version_of() {
    local dir="$dest/$1"
    case "$1" in
    containerd-*) "$dir/usr/bin/containerd" --version ;;
    docker) echo "$("$dir/usr/sbin/dockerd" --version), CLI $("$dir/usr/bin/docker" --version)" ;;
    nginx) "$dir/usr/sbin/nginx" -v 2>&1 ;;
    registry) "$dir/usr/bin/docker-registry" --version ;;
    esac
}

# A private apt: its own sources, lists, cache and (empty) dpkg status, so
# that neither the system's sources nor its installed packages play a part.
# The system's apt.conf.d still applies (proxies), minus its hooks that
# would act on the system after an update, and minus the AppStream
# metadata, which nothing here needs.
setup_apt() {
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
    : > "$apt_dir/status"
    cat > "$apt_dir/sources.list" <<EOF
deb [signed-by=$keyring] $mirror bookworm main
deb [signed-by=$keyring] $mirror trixie main
deb [signed-by=$keyring] $mirror forky main
EOF
    cat > "$apt_conf" <<EOF
Dir::Etc::SourceList "$apt_dir/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "/dev/null";
Dir::State "$apt_dir";
Dir::State::Lists "$apt_dir/lists";
Dir::State::status "$apt_dir/status";
Dir::Cache "$apt_dir/cache";
Acquire::Languages "none";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled "false";
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
EOF
    # apt downloads as the unprivileged _apt user when it can write there.
    if id _apt >/dev/null 2>&1; then
        chown _apt "$apt_dir/debs" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    fi
}

# The version of a package in a suite, from the private lists.
suite_version() {
    apt-cache -c "$apt_conf" madison "$1" |
        awk -F' *[|] *' -v s=" $2/main " '$3 ~ s { print $2; exit }'
}

# Fetches and unpacks one folder's packages.
fetch() {
    local name=$1 suite=$2 upstream=$3 pkgs=$4 pkg version have specs=() debs=()
    for pkg in $pkgs; do
        version=$(suite_version "$pkg" "$suite")
        if [ -z "$version" ]; then
            echo "containerd-versions: $suite has no package $pkg" >&2
            return 1
        fi
        specs+=("$pkg=$version")
    done
    if [ -n "$upstream" ]; then
        # containerd's Debian versions look like 1.7.24~ds1-6+deb13u1.
        have=${specs[0]#*=}
        have=${have%%[~+-]*}
        if [ "${have%.*}" != "${upstream%.*}" ]; then
            echo "containerd-versions: $suite now has ${specs[0]}, not a $upstream (update this script)" >&2
            return 1
        fi
        if [ "$have" != "$upstream" ]; then
            echo "containerd-versions: note: $suite has ${specs[0]}, not $upstream; using it for $name" >&2
        fi
    fi
    rm -f "$apt_dir/debs"/*.deb
    (cd "$apt_dir/debs" && apt-get -c "$apt_conf" -q download "${specs[@]}" >/dev/null)
    debs=("$apt_dir/debs"/*.deb)
    # Unpack next to the folder and move it into place, so that a folder
    # is either complete or absent.
    rm -rf "${dest:?}/$name.new" "${dest:?}/$name"
    mkdir -p "$dest/$name.new"
    for pkg in "${debs[@]}"; do
        dpkg -x "$pkg" "$dest/$name.new"
    done
    printf '%s\n' "${specs[@]}" > "$dest/$name.new/.packages"
    mv "$dest/$name.new" "$dest/$name"
    rm -f "$apt_dir/debs"/*.deb
}

mkdir -p "$dest"
updated=
for target in "${targets[@]}"; do
    IFS='|' read -r name suite upstream pkgs <<< "$target"
    state=cached
    if ! complete "$name"; then
        if [ -z "$updated" ]; then
            setup_apt
            apt-get -c "$apt_conf" -q update >/dev/null
            updated=1
        fi
        fetch "$name" "$suite" "$upstream" "$pkgs"
        complete "$name" || {
            echo "containerd-versions: $name lacks one of: $(binaries "$name")" >&2
            exit 1
        }
        state=fetched
    fi
    if ! line=$(version_of "$name" 2>&1); then
        echo "containerd-versions: $dest/$name does not run here: $line" >&2
        exit 1
    fi
    echo "$name ($state from $suite: $(paste -sd' ' "$dest/$name/.packages")): ${line%"${line##*[! ]}"}"
done

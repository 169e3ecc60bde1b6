#!/usr/bin/env bash
# Tests install.sh on the config files of real containerds, without
# starting or restarting any: for the system's containerd (from PATH) and,
# when VERSIONS_DIR has them (scripts/containerd-versions.sh), containerd
# 1.7.24 and 2.1.9, it patches their `containerd config default` and other
# configs under a temporary HOST_ROOT and asks that containerd, through
# `containerd --config FILE config dump`, whether it sees the runtime.
#
#   deploy/installer/test.sh VERSIONS_DIR
#
# With INSTALLER_OUT set, also writes each version's patched default
# config to $INSTALLER_OUT/<version>/config.toml (version as 1.6.20). Those
# name the system paths (/var/lib/containerd, /run/containerd, the socket):
# start a containerd on one with --root, --state and --address.
#
# Checks, per containerd version:
#   default    install adds the runtime to the CRI plugin (in config dump,
#              with runtime_type io.containerd.wasmtime.v1, runc still
#              there); again: byte-identical; uninstall: byte-identical to
#              the default, shim gone; the same bytes under dash, bash and
#              busybox sh with only busybox's tools
#   theirs     configs that define wasmtime themselves (a table, an inline
#              table) are left alone by install and uninstall
#   imports    a config importing /etc/containerd/conf.d/*.toml is left
#              alone, conf.d/wasmtime.toml is written, config dump sees it
#              (through a copy that imports from the temporary root), and
#              uninstall removes it
#   versionless, no final newline, missing config (created, then removed)
#   verify     on the real PATH (HOST_ROOT=/): the containerd version is
#              detected, config dump accepts the change; a config version
#              this containerd does not read is rolled back
#   errors     missing shim, unknown config version, read-only config folder
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
installer=$here/install.sh
versions=$(realpath "${1:?usage: test.sh VERSIONS_DIR}")
out=${INSTALLER_OUT:-}
if [ -n "$out" ]; then
    out=$(realpath -m "$out")
fi

tmp=$(mktemp -d)
mounted=
cleanup() {
    if [ -n "$mounted" ]; then umount "$mounted" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
checks=0
label=
fail() {
    echo "FAIL [$label] $*" >&2
    failures=$((failures + 1))
    checks=$((checks + 1))
}
pass() {
    echo "ok   [$label] $*"
    checks=$((checks + 1))
}
check() { # description, command...
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# A stand-in for the shim that answers -v like it.
shim=$tmp/shim
printf '#!/bin/sh\necho "containerd-shim-wasmtime-v1 (test stand-in)"\n' >"$shim"
chmod 0755 "$shim"

# Runs the installer under a temporary root: installer ROOT ACTION [VAR=value...].
# Its output goes to $tmp/log; on an unexpected status the log is printed.
installer() {
    local root=$1 action=$2
    shift 2
    env HOST_ROOT="$root" SHIM_SOURCE="$shim" RESTART=none VERIFY=no \
        CONTAINERD_VERSION="$version" "$@" "${shell:-sh}" "$installer" "$action" >"$tmp/log" 2>&1
}
expect_ok() {
    if ! installer "$@"; then
        sed 's/^/    | /' "$tmp/log" >&2
        return 1
    fi
}
expect_fail() {
    if installer "$@"; then
        sed 's/^/    | /' "$tmp/log" >&2
        return 1
    fi
}
logged() { grep -q -- "$1" "$tmp/log" || { sed 's/^/    | /' "$tmp/log" >&2; return 1; }; }

dump() { "$bin" --config "$1" config dump 2>/dev/null; }

# Whether config dump of a config shows the runtime in the CRI plugin of
# this containerd's layout with our runtime_type.
sees_runtime() {
    dump "$1" | awk -v key="$cri_plugin" '
        /^[[:space:]]*\[/ { inside = index($0, key) && $0 ~ /runtimes\.wasmtime\]/ }
        inside && /runtime_type/ && /io\.containerd\.wasmtime\.v1/ { found = 1 }
        END { exit !found }'
}
sees_runc() { dump "$1" | grep -q 'runtimes\.runc\]'; }
not_sees_runtime() { ! dump "$1" | grep -q 'runtimes\.wasmtime\]'; }
same() { cmp -s "$1" "$2"; }
absent() { [ ! -e "$1" ]; }
shim_installed() { [ -x "$1/usr/local/bin/containerd-shim-wasmtime-v1" ] && cmp -s "$shim" "$1/usr/local/bin/containerd-shim-wasmtime-v1"; }
shim_removed() { [ ! -e "$1/usr/local/bin/containerd-shim-wasmtime-v1" ]; }

fresh_root() {
    local root=$tmp/$1
    rm -rf "$root"
    mkdir -p "$root/etc/containerd"
    echo "$root"
}

# A busybox-only PATH, as in a minimal installer image.
busybox_path=
if command -v busybox >/dev/null; then
    busybox_path=$tmp/busybox
    mkdir -p "$busybox_path"
    for applet in sh awk sed grep cmp sha256sum cp mv rm mkdir mktemp chmod cat tail head tr sort dirname env chroot; do
        ln -s "$(command -v busybox)" "$busybox_path/$applet"
    done
fi

test_default() {
    local root cfg
    root=$(fresh_root default)
    cfg=$root/etc/containerd/config.toml
    "$bin" config default >"$tmp/default.toml"
    cp "$tmp/default.toml" "$cfg"
    check "default: install" expect_ok "$root" install
    check "default: config dump shows the runtime in $cri_plugin" sees_runtime "$cfg"
    check "default: runc is still there" sees_runc "$cfg"
    check "default: shim installed, 0755" shim_installed "$root"
    check "default: the default config is a prefix of the patched one" \
        cmp -s "$tmp/default.toml" <(head -c "$(wc -c <"$tmp/default.toml")" "$cfg")
    cp "$cfg" "$tmp/once.toml"
    if [ -n "$out" ]; then
        mkdir -p "$out/$name"
        cp "$cfg" "$out/$name/config.toml"
    fi
    check "default: install again" expect_ok "$root" install
    check "default: second install is byte-identical" same "$cfg" "$tmp/once.toml"
    check "default: second install says so" logged "already has the wasmtime runtime"
    check "default: uninstall" expect_ok "$root" uninstall
    check "default: uninstall gives back the default byte for byte" same "$cfg" "$tmp/default.toml"
    check "default: shim removed" shim_removed "$root"
    check "default: config dump no longer shows it" not_sees_runtime "$cfg"
    check "default: uninstall again changes nothing" expect_ok "$root" uninstall
    check "default: still the default" same "$cfg" "$tmp/default.toml"

    # A binary install.sh did not put there, or that changed since, stays.
    local dest=$root/usr/local/bin/containerd-shim-wasmtime-v1
    cp "$shim" "$dest"
    check "default: uninstall of a binary placed by hand" expect_ok "$root" uninstall
    check "default: it leaves that binary" shim_installed "$root"
    check "default: and says why" logged "install.sh did not install it"
    rm -f "$dest"
    check "default: install over nothing" expect_ok "$root" install
    echo changed >>"$dest"
    check "default: uninstall after the binary changed" expect_ok "$root" uninstall
    check "default: it leaves the changed binary" test -e "$dest"
    check "default: and says why" logged "it changed since install.sh installed it"
    check "default: the receipt goes" absent "$root/usr/local/bin/.containerd-shim-wasmtime-v1.installed"
    rm -f "$dest"
    cp "$tmp/default.toml" "$cfg"

    # The same bytes from other shells and from busybox's tools.
    local sh_name
    for sh_name in bash busybox; do
        cp "$tmp/default.toml" "$cfg"
        case $sh_name in
        bash) shell=bash expect_ok "$root" install || true ;;
        busybox)
            [ -n "$busybox_path" ] || continue
            PATH=$busybox_path shell=sh expect_ok "$root" install || true
            ;;
        esac
        check "default: install under $sh_name writes the same bytes" same "$cfg" "$tmp/once.toml"
        case $sh_name in
        bash) shell=bash expect_ok "$root" uninstall || true ;;
        busybox) PATH=$busybox_path shell=sh expect_ok "$root" uninstall || true ;;
        esac
        check "default: uninstall under $sh_name restores the bytes" same "$cfg" "$tmp/default.toml"
    done
}

test_theirs() {
    local root cfg
    root=$(fresh_root theirs)
    cfg=$root/etc/containerd/config.toml
    # As someone else would add it: a table of their own.
    {
        cat "$tmp/default.toml"
        printf '\n[%s.containerd.runtimes.wasmtime]\n  runtime_type = "io.containerd.wasmtime.v1"\n' "$cri_key"
    } >"$cfg"
    cp "$cfg" "$tmp/theirs.toml"
    check "theirs (table): the fixture is valid" sees_runtime "$cfg"
    check "theirs (table): install" expect_ok "$root" install
    check "theirs (table): install leaves the config alone" same "$cfg" "$tmp/theirs.toml"
    check "theirs (table): install says why" logged "already defines a runtime named wasmtime"
    check "theirs (table): uninstall" expect_ok "$root" uninstall
    check "theirs (table): uninstall leaves the config alone" same "$cfg" "$tmp/theirs.toml"

    # An inline table inside the runtimes table.
    printf '%s\n[%s.containerd.runtimes]\n  wasmtime = { runtime_type = "io.containerd.wasmtime.v1" }\n' \
        "$version_line" "$cri_key" >"$cfg"
    cp "$cfg" "$tmp/theirs.toml"
    check "theirs (inline): the fixture is valid" sees_runtime "$cfg"
    check "theirs (inline): install" expect_ok "$root" install
    check "theirs (inline): install leaves the config alone" same "$cfg" "$tmp/theirs.toml"
    check "theirs (inline): uninstall" expect_ok "$root" uninstall
    check "theirs (inline): uninstall leaves the config alone" same "$cfg" "$tmp/theirs.toml"
}

test_imports() {
    local root cfg snippet view
    root=$(fresh_root imports)
    cfg=$root/etc/containerd/config.toml
    snippet=$root/etc/containerd/conf.d/wasmtime.toml
    sed 's|^imports = \[\]$|imports = ["/etc/containerd/conf.d/*.toml"]|' "$tmp/default.toml" >"$cfg"
    cp "$cfg" "$tmp/imports.toml"
    check "imports: the fixture imports conf.d" grep -q '^imports = \["/etc/containerd/conf.d/\*.toml"\]$' "$cfg"
    view=$tmp/imports-view.toml
    if [ "$cfg_version" != 3 ]; then
        # containerd 1.x would let an imported CRI section replace the main
        # file's: the runtime goes into the main file.
        check "imports (v$cfg_version): install" expect_ok "$root" install
        check "imports (v$cfg_version): says why it edits the main file" logged "adding the runtime to /etc/containerd/config.toml itself"
        check "imports (v$cfg_version): no conf.d file" absent "$snippet"
        sed "s|\"/etc/containerd/conf.d/|\"$root/etc/containerd/conf.d/|" "$cfg" >"$view"
        check "imports (v$cfg_version): config dump shows the runtime" sees_runtime "$view"
        check "imports (v$cfg_version): and runc" sees_runc "$view"
        check "imports (v$cfg_version): uninstall" expect_ok "$root" uninstall
        check "imports (v$cfg_version): uninstall restores the bytes" same "$cfg" "$tmp/imports.toml"
        return
    fi
    check "imports: install" expect_ok "$root" install
    check "imports: the main config is untouched" same "$cfg" "$tmp/imports.toml"
    check "imports: conf.d/wasmtime.toml written" test -f "$snippet"
    check "imports: with the main config's version line" grep -qx "$version_line" "$snippet"
    # containerd would read /etc/containerd/conf.d; point a copy at the temporary root.
    sed "s|\"/etc/containerd/conf.d/|\"$root/etc/containerd/conf.d/|" "$cfg" >"$view"
    check "imports: config dump sees the runtime through the import" sees_runtime "$view"
    check "imports: and runc" sees_runc "$view"
    cp "$snippet" "$tmp/snippet.toml"
    check "imports: install again" expect_ok "$root" install
    check "imports: main config still untouched" same "$cfg" "$tmp/imports.toml"
    check "imports: snippet byte-identical" same "$snippet" "$tmp/snippet.toml"
    # Someone else's file in conf.d defining wasmtime: ours goes, theirs stays.
    printf '%s\n[%s.containerd.runtimes.wasmtime]\n  runtime_type = "io.containerd.wasmtime.v1"\n' \
        "$version_line" "$cri_key" >"$root/etc/containerd/conf.d/other.toml"
    check "imports: install beside another file defining wasmtime" expect_ok "$root" install
    check "imports: our snippet gives way" absent "$snippet"
    check "imports: and says why" logged "other.toml already defines a runtime named wasmtime"
    rm "$root/etc/containerd/conf.d/other.toml"
    check "imports: install" expect_ok "$root" install
    check "imports: uninstall" expect_ok "$root" uninstall
    check "imports: main config untouched" same "$cfg" "$tmp/imports.toml"
    check "imports: snippet removed" absent "$snippet"
    check "imports: shim removed" shim_removed "$root"
}

test_shapes() {
    local root cfg
    root=$(fresh_root shapes)
    cfg=$root/etc/containerd/config.toml

    # No version line: containerd 1.x reads version 1, 2.x version 3.
    printf 'oom_score = 0\n' >"$cfg"
    cp "$cfg" "$tmp/shape.toml"
    check "versionless: install" expect_ok "$root" install
    check "versionless: config dump shows the runtime" sees_runtime "$cfg"
    check "versionless: and runc" sees_runc "$cfg"
    check "versionless: uninstall" expect_ok "$root" uninstall
    check "versionless: uninstall restores the bytes" same "$cfg" "$tmp/shape.toml"

    # Debian's packaged config: a CRI section that names no runtime.
    if [ -f "$debian_config" ]; then
        cp "$debian_config" "$cfg"
        cp "$cfg" "$tmp/shape.toml"
        check "debian config: install" expect_ok "$root" install
        check "debian config: config dump shows the runtime" sees_runtime "$cfg"
        check "debian config: and runc" sees_runc "$cfg"
        check "debian config: and the CNI folder" bash -c "$(declare -f dump); bin='$bin'; dump '$cfg' | grep -E -q 'bin_dirs? = .*/usr/lib/cni'"
        check "debian config: uninstall" expect_ok "$root" uninstall
        check "debian config: uninstall restores the bytes" same "$cfg" "$tmp/shape.toml"
    fi

    # No final newline.
    printf '%s\noom_score = 0' "$version_line" >"$cfg"
    cp "$cfg" "$tmp/shape.toml"
    check "no final newline: install" expect_ok "$root" install
    check "no final newline: config dump shows the runtime" sees_runtime "$cfg"
    cp "$cfg" "$tmp/once.toml"
    check "no final newline: install again" expect_ok "$root" install
    check "no final newline: byte-identical" same "$cfg" "$tmp/once.toml"
    check "no final newline: uninstall" expect_ok "$root" uninstall
    check "no final newline: uninstall restores the bytes" same "$cfg" "$tmp/shape.toml"

    # No config at all.
    rm -f "$cfg"
    check "missing config: install" expect_ok "$root" install
    check "missing config: created with version $cfg_version" grep -qx "version = $cfg_version" "$cfg"
    check "missing config: config dump shows the runtime" sees_runtime "$cfg"
    check "missing config: runc is still there" sees_runc "$cfg"
    cp "$cfg" "$tmp/once.toml"
    check "missing config: install again" expect_ok "$root" install
    check "missing config: byte-identical" same "$cfg" "$tmp/once.toml"
    check "missing config: uninstall" expect_ok "$root" uninstall
    check "missing config: the file is gone again" absent "$cfg"
}

# VERIFY=yes on the real PATH, with everything below the temporary folder.
test_verify() {
    local dir=$tmp/verify cfg
    rm -rf "$dir"
    mkdir -p "$dir/bin"
    cfg=$dir/config.toml
    verify() {
        env PATH="$(dirname "$bin"):$PATH" HOST_ROOT=/ SHIM_SOURCE="$shim" SHIM_DIR="$dir/bin" \
            CONTAINERD_CONFIG="$cfg" RESTART=none VERIFY=yes \
            sh "$installer" "$1" >"$tmp/log" 2>&1
    }
    printf 'oom_score = 0\n' >"$cfg"
    cp "$cfg" "$tmp/verify.toml"
    check "verify: install detects the version and passes config dump" verify install
    check "verify: config dump shows the runtime" sees_runtime "$cfg"
    check "verify: uninstall" verify uninstall
    check "verify: uninstall restores the bytes" same "$cfg" "$tmp/verify.toml"

    # A config version this containerd does not take the runtime from.
    case $major in
    1) printf 'version = 3\n' >"$cfg" ;;
    *) printf 'version = 1\n' >"$cfg" ;;
    esac
    cp "$cfg" "$tmp/verify.toml"
    if verify install; then
        fail "verify: install into $(head -1 "$cfg") should fail"
    else
        pass "verify: install into $(head -1 "$cfg") fails"
    fi
    check "verify: it says the runtime is not seen or the config is rejected" \
        grep -q -e "does not see the wasmtime runtime" -e "rejects the new config" "$tmp/log"
    check "verify: the old config is back" same "$cfg" "$tmp/verify.toml"
}

test_errors() {
    local root cfg
    root=$(fresh_root errors)
    cfg=$root/etc/containerd/config.toml
    cp "$tmp/default.toml" "$cfg"
    check "errors: a missing shim fails" expect_fail "$root" install SHIM_SOURCE=/nonexistent/shim
    check "errors: naming SHIM_SOURCE" logged "no shim binary at /nonexistent/shim (set SHIM_SOURCE)"
    check "errors: the config is untouched" same "$cfg" "$tmp/default.toml"
    printf 'version = 9\n' >"$cfg"
    check "errors: an unknown config version fails" expect_fail "$root" install
    check "errors: naming the version" logged "has version = 9, which install.sh does not know"
    check "errors: that config is untouched" grep -qx 'version = 9' "$cfg"
    cp "$tmp/default.toml" "$cfg"
    if mount --bind "$root/etc/containerd" "$root/etc/containerd" 2>/dev/null; then
        mounted=$root/etc/containerd
        mount -o remount,bind,ro "$mounted"
        check "errors: a read-only config folder fails" expect_fail "$root" install
        check "errors: saying so" logged "cannot write in /etc/containerd (read-only?)"
        umount "$mounted"
        mounted=
        check "errors: the config is untouched" same "$cfg" "$tmp/default.toml"
    else
        echo "skip [$label] errors: read-only folder (cannot bind-mount here)"
    fi
}

# Debian's /etc/containerd/config.toml, as the containerd package ships it.
debian_config=$versions/containerd-1.7.24/etc/containerd/config.toml

# RESTART, with nsenter and systemctl stubs that log their arguments.
test_restart() {
    local root cfg stubs=$tmp/stubs
    root=$(fresh_root restart)
    cfg=$root/etc/containerd/config.toml
    mkdir -p "$stubs"
    for stub in nsenter systemctl; do
        printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$stub" "$tmp/calls" >"$stubs/$stub"
        chmod 0755 "$stubs/$stub"
    done
    restarts() { PATH="$stubs:$PATH" installer "$root" "$@" RESTART=auto; }
    calls() { [ "$(cat "$tmp/calls" 2>/dev/null)" = "$1" ]; }

    cp "$tmp/default.toml" "$cfg"
    rm -f "$tmp/calls"
    check "restart: install on a node without systemd" restarts install
    check "restart: says containerd must be restarted" logged "restart containerd yourself"
    check "restart: no systemctl" calls ""
    check "restart: uninstall" restarts uninstall

    mkdir -p "$root/run/systemd/system"
    check "restart: install on a systemd node" restarts install
    check "restart: systemctl in the node's namespaces" \
        calls "nsenter --mount=$root/proc/1/ns/mnt --uts=$root/proc/1/ns/uts --ipc=$root/proc/1/ns/ipc --net=$root/proc/1/ns/net --pid=$root/proc/1/ns/pid -- systemctl restart containerd"
    rm -f "$tmp/calls"
    check "restart: install again" restarts install
    check "restart: no restart without a change" calls ""
    check "restart: uninstall" restarts uninstall CONTAINERD_SERVICE=containerd.service
    check "restart: restarts the given unit" \
        calls "nsenter --mount=$root/proc/1/ns/mnt --uts=$root/proc/1/ns/uts --ipc=$root/proc/1/ns/ipc --net=$root/proc/1/ns/net --pid=$root/proc/1/ns/pid -- systemctl restart containerd.service"
    rm -f "$tmp/calls"
    check "restart: RESTART=none" installer "$root" install
    check "restart: no systemctl" calls ""
    check "restart: uninstall" installer "$root" uninstall
    check "restart: RESTART=sometimes is an error" expect_fail "$root" install RESTART=sometimes
    check "restart: saying so" logged "RESTART must be auto or none"
}

# VERIFY's last line of defence, with a containerd stub whose config dump
# loses a runtime once the config names wasmtime.
test_guard() {
    local dir=$tmp/guard cfg
    rm -rf "$dir"
    mkdir -p "$dir/stub" "$dir/bin"
    cfg=$dir/config.toml
    cat >"$dir/stub/containerd" <<'STUB'
#!/bin/sh
[ "$1" = --version ] && { echo "containerd stub 1.7.0"; exit 0; }
echo '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]'
if grep -q wasmtime "$2"; then
    printf '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmtime]\n  runtime_type = "io.containerd.wasmtime.v1"\n'
else
    echo '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes."kata.v2"]'
fi
STUB
    chmod 0755 "$dir/stub/containerd"
    printf 'version = 2\n' >"$cfg"
    if env PATH="$dir/stub:$PATH" HOST_ROOT=/ SHIM_SOURCE="$shim" SHIM_DIR="$dir/bin" \
        CONTAINERD_CONFIG="$cfg" RESTART=none VERIFY=yes sh "$installer" install >"$tmp/log" 2>&1; then
        fail "guard: install that loses a runtime should fail"
    else
        pass "guard: install that loses a runtime fails"
    fi
    check "guard: naming the runtime" logged "would lose its runtime(s) kata.v2, so the old config is back"
    check "guard: the old config is back" grep -qx 'version = 2' "$cfg"
    check "guard: nothing else in it" test "$(wc -l <"$cfg")" -eq 1
}

bins=()
if command -v containerd >/dev/null; then bins+=("$(command -v containerd)"); fi
for v in 1.7.24 2.1.9; do
    if [ -x "$versions/containerd-$v/usr/bin/containerd" ]; then
        bins+=("$versions/containerd-$v/usr/bin/containerd")
    else
        echo "skip containerd $v: no $versions/containerd-$v/usr/bin/containerd (run scripts/containerd-versions.sh $versions)"
    fi
done
[ ${#bins[@]} -gt 0 ] || { echo "no containerd to test with" >&2; exit 1; }

for bin in "${bins[@]}"; do
    # "containerd github.com/containerd/containerd 1.6.20~ds1 ..." -> 1.6.20
    version=$("$bin" --version | awk '{ print $3 }')
    name=${version%%[~+-]*}
    name=${name#v}
    major=${name%%.*}
    label=$name
    if [ "$major" -ge 2 ]; then
        cri_plugin=io.containerd.cri.v1.runtime cfg_version=3
    else
        cri_plugin=io.containerd.grpc.v1.cri cfg_version=2
    fi
    cri_key="plugins.\"$cri_plugin\""
    version_line="version = $cfg_version"
    echo "== containerd $version ($bin)"
    test_default
    test_theirs
    test_imports
    test_shapes
    test_verify
    test_errors
done

label=restart
test_restart
label=guard
test_guard

if [ "$failures" -ne 0 ]; then
    echo "installer tests: $failures of $checks checks FAILED" >&2
    exit 1
fi
echo "installer tests: all $checks checks passed on ${#bins[@]} containerd versions${out:+; patched configs in $out}"

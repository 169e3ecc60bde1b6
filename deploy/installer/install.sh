#!/bin/sh
# Installs containerd-shim-wasmtime-v1 on a node and registers it with the
# node's containerd as the runtime handler `wasmtime` (the handler of
# deploy/runtimeclass.yaml), or takes exactly that back out again.
#
#   install.sh install     copy the shim, add the runtime, restart containerd if its config changed
#   install.sh uninstall   remove what `install` added, restart containerd if its config changed
#
# Environment (paths are the node's, below HOST_ROOT):
#   HOST_ROOT          the node's root filesystem: / (default) or /host in the DaemonSet
#   SHIM_SOURCE        the shim to install (default /opt/wasmtime-shim/containerd-shim-wasmtime-v1)
#   SHIM_DIR           where it goes; containerd must find it on its PATH (default /usr/local/bin)
#   CONTAINERD_CONFIG  containerd's config file (default /etc/containerd/config.toml)
#   CONTAINERD_VERSION the node's containerd version (1.7.24, 2.1 or just 2); only read when the
#                      config has no `version` line or does not exist, and then, when unset,
#                      taken from `containerd --version` on the node
#   RESTART            auto (default): restart containerd with systemd when the config changed;
#                      none: never (the caller restarts it)
#   CONTAINERD_SERVICE the systemd unit (default containerd)
#   VERIFY             yes (default): before using them, run the copied shim and
#                      `containerd config dump` on the node (through chroot when HOST_ROOT is
#                      not /); put the old config back if containerd rejects the new one, does
#                      not see the runtime, or would lose a runtime it had; no: skip (tests)
#
# What it writes: a runtime table in the layout of the config's `version`,
#   version = 2 (containerd 1.x; 2.x migrates it)  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmtime]
#   version = 3 (containerd 2.x only)              [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.wasmtime]
#   version = 1 (containerd 1.x)                   [plugins.cri.containerd.runtimes.wasmtime]
# with runtime_type = "io.containerd.wasmtime.v1". containerd 1.x reads a
# config without `version` as version 1, 2.x as version 3 (2.1 renames a
# `plugins.cri` table but then ignores its runtimes), so such a config gets
# the layout of the node's containerd. A missing config becomes a file of
# its own with `version = 2` (1.x) or `version = 3` (2.x). containerd 1.x
# replaces its default runtimes (just runc, the default runtime) by the
# config's as a whole, so in the 1.x layouts the block also names runc
# (runtime_type io.containerd.runc.v2) unless the config already does.
#
# The lines go at the end of the config between "# BEGIN/# END
# wasmtime-shim installer" comments; the rest of the file stays byte for
# byte, and `uninstall` deletes exactly those lines (and the final newline
# install had to add, or the file it created). A version 3 config that
# imports a folder glob at an absolute path (imports =
# ["/etc/containerd/conf.d/*.toml"]) gets the table in a file of its own
# there instead (conf.d/wasmtime.toml, with the same `version` line) and
# the main file is left alone. Older versions do not: containerd 1.x lets
# an imported file's plugin section replace the main file's whole section
# (sandbox image, runc and all), so there the main file gets the block. A
# config that already defines a runtime named wasmtime without these
# markers, itself or in what it imports, is left alone, since TOML forbids
# defining a table twice.
#
# Only POSIX sh, awk, sed, grep, sort, cmp, cp, mv, mktemp, and sha256sum; chroot and
# nsenter for VERIFY and RESTART.
set -eu

TAG="wasmtime-shim installer"
BEGIN="# BEGIN $TAG"
END="# END $TAG"
SNIPPET_HEAD="# $TAG: \`install.sh uninstall\` removes this file"
RUNTIME_TYPE=io.containerd.wasmtime.v1
SHIM_NAME=containerd-shim-wasmtime-v1
HOST_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "install.sh: $*"; }
die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

usage() {
    echo "usage: install.sh install|uninstall (see the comment at the top for the environment)" >&2
    exit 2
}

# Runs a command on the node: directly, or chrooted into HOST_ROOT.
host_run() {
    if [ -z "$root" ]; then
        "$@"
    else
        PATH=$HOST_PATH chroot "$root" "$@"
    fi
}

# The `version` of a config (its top-level key, before the first table), or nothing.
cfg_version() {
    awk '
        /^[[:space:]]*\[/ { exit }
        /^[[:space:]]*version[[:space:]]*=/ {
            v = $0
            sub(/^[^=]*=[[:space:]]*/, "", v)
            sub(/[[:space:]]*(#.*)?$/, "", v)
            print v
            exit
        }' "$1"
}

# The strings of a config's top-level `imports` array, one a line.
cfg_imports() {
    awk '
        !grab && /^[[:space:]]*\[/ { exit }
        !grab && /^[[:space:]]*imports[[:space:]]*=/ { grab = 1; sub(/^[^=]*=/, "") }
        grab {
            line = $0
            while (match(line, /"[^"]*"|'"'[^']*'"'|\]/)) {
                s = substr(line, RSTART, RLENGTH)
                if (s == "]") exit
                print substr(s, 2, RLENGTH - 2)
                line = substr(line, RSTART + RLENGTH)
            }
        }' "$1"
}

# Prints the file that a config's imports would read for our runtime: in
# the first absolute folder glob whose name part is made of `*` and plain
# characters, the name with the first `*` as "wasmtime" and the others
# dropped (conf.d/*.toml -> conf.d/wasmtime.toml). Prints the glob too.
pick_snippet() {
    cfg_imports "$1" | while IFS= read -r glob; do
        case "$glob" in
        /*/*\**) ;;
        *) continue ;;
        esac
        dir=${glob%/*}
        pat=${glob##*/}
        case "$dir" in *[*?[]*) continue ;; esac
        case "$pat" in *[?[]*) continue ;; esac
        name=$(printf '%s\n' "$pat" | sed -e 's/\*/wasmtime/' -e 's/\*//g')
        # shellcheck disable=SC2254 # the pattern is the glob's
        case "$name" in
        $pat) ;;
        *) continue ;;
        esac
        printf '%s/%s\n%s\n' "$dir" "$name" "$glob"
        break
    done
}

# Checks that our markers pair up; a lone one means the file was edited by hand.
check_markers() {
    awk -v b="$BEGIN" -v e="$END" -v f="$2" '
        index($0, b) == 1 { if (open) bad = 1; open = 1 }
        $0 == e { if (!open) bad = 1; open = 0 }
        END { if (bad || open) { print f; exit 1 } }' "$1" >/dev/null ||
        die "$2 has a damaged \"$BEGIN\" ... \"$END\" block; fix it by hand"
}

# Prints a config without our block. The block starts on a line of its
# own; when install had to end the last line first, the begin marker says
# so and the output ends without that newline again.
strip() {
    lastnl=1
    if [ -s "$1" ] && [ -n "$(tail -c 1 "$1")" ]; then
        lastnl=0
    fi
    awk -v b="$BEGIN" -v e="$END" -v lastnl="$lastnl" '
        index($0, b) == 1 { inblock = 1; seen = 1; after = 0
                            nonl = index($0, "[added a final newline]") > 0; next }
        inblock { if ($0 == e) inblock = 0; next }
        { line[++n] = $0; if (seen) after = 1 }
        END {
            for (i = 1; i <= n; i++) printf "%s%s", line[i], (i < n ? "\n" : "")
            if (n > 0 && !(seen && nonl && !after) && (lastnl || (seen && !after))) printf "\n"
        }' "$1"
}

# Whether a config (without our block) already defines a runtime of a
# name ($1): as a table, a dotted key or an inline table.
defines_runtime() {
    sed -e 's/#.*//' -e "s/[\"' 	]//g" "$2" |
        grep -E -q "(^|[.{,])runtimes\\.$1([].=]|\$)|(^|[{,])$1=\\{|^$1\\."
}

# The CRI plugin's key in each config version.
cri_key() {
    case "$1" in
    1) echo 'plugins.cri' ;;
    2) echo 'plugins."io.containerd.grpc.v1.cri"' ;;
    3) echo 'plugins."io.containerd.cri.v1.runtime"' ;;
    esac
}

# Prints our block: $1 the flags of its first line, $2 the config version
# whose layout it uses, $3 a version line (for a file of its own) or nothing.
# containerd 1.x decodes a config's runtimes over its defaults as a whole
# map, so that naming any runtime drops its built-in runc (the default
# runtime): the block names runc again, as the defaults have it, unless the
# config does. (containerd 2.x merges; version 3 is 2.x only.)
block() {
    echo "$BEGIN (\`install.sh uninstall\` removes this block)$1"
    [ -z "$3" ] || echo "$3"
    if [ "$2" != 3 ] && ! defines_runtime runc "$stripped"; then
        echo "# containerd 1.x forgets its built-in runc runtime once the config names another one"
        printf '[%s.containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n' "$(cri_key "$2")"
    fi
    printf '[%s.containerd.runtimes.wasmtime]\n  runtime_type = "%s"\n' "$(cri_key "$2")" "$RUNTIME_TYPE"
    echo "$END"
}

# The major version of the node's containerd.
containerd_major() {
    v=${CONTAINERD_VERSION:-}
    if [ -z "$v" ]; then
        v=$(host_run containerd --version 2>/dev/null | awk '{ print $3 }') || v=
        [ -n "$v" ] ||
            die "$cfg_rel has no version line (or is missing) and \`containerd --version\` did not run on the node; set CONTAINERD_VERSION (e.g. 1.7 or 2.1)"
    fi
    v=${v#v}
    major=${v%%.*}
    case "$major" in
    '' | *[!0-9]*) die "cannot read a containerd version from \"$v\"" ;;
    esac
    echo "$major"
}

# The config version whose layout a config file without `version` gets.
implicit_version() {
    major=$(containerd_major) || exit 1
    if [ "$major" -ge 2 ]; then echo 3; else echo 1; fi
}

# Replaces a file by a new content file, atomically, keeping its mode and
# owner. Remembers the old content for restore().
put() {
    dest=$1
    new=$2
    node=${dest#"$root"}
    backup "$dest"
    tmp="$dest.wasmtime-shim.$$"
    if [ -e "$dest" ]; then
        cp -p "$dest" "$tmp" 2>/dev/null || die "cannot write in $(dirname "$node") (read-only?)"
    else
        mkdir -p "$(dirname "$dest")" 2>/dev/null || die "cannot create $(dirname "$node")"
        (umask 022 && : >"$tmp") 2>/dev/null || die "cannot write in $(dirname "$node") (read-only?)"
    fi
    if ! { cat "$new" >"$tmp" && mv -f "$tmp" "$dest"; }; then
        rm -f "$tmp"
        die "cannot replace $node"
    fi
}

drop() {
    backup "$1"
    rm -f "$1" || die "cannot remove ${1#"$root"}"
}

# Keeps the first state of each file that put/drop change (a copy, or a
# note that it did not exist), so that restore() can put it back.
backup() {
    n=0
    while [ -e "$work/changed.$n" ]; do
        [ "$(cat "$work/changed.$n")" = "$1" ] && return 0
        n=$((n + 1))
    done
    printf '%s\n' "$1" >"$work/changed.$n"
    if [ -e "$1" ]; then cp -p "$1" "$work/orig.$n"; fi
}

restore() {
    n=0
    while [ -e "$work/changed.$n" ]; do
        f=$(cat "$work/changed.$n")
        if [ -e "$work/orig.$n" ]; then
            cp -p "$work/orig.$n" "$f.restore" && mv -f "$f.restore" "$f"
        else
            rm -f "$f"
        fi
        n=$((n + 1))
    done
}

changed() { [ -e "$work/changed.0" ]; }

# Writes a new content file into a config file unless it already is that.
update() {
    if [ -e "$1" ] && cmp -s "$1" "$2"; then
        return 0
    fi
    put "$1" "$2"
    say "$3"
}

# Sets up the config for `install` ($1 = install) or takes it out again.
configure() {
    action=$1
    snippet=
    stripped="$work/main"
    if [ -L "$cfg" ]; then
        die "$cfg_rel is a symlink; set CONTAINERD_CONFIG to the file it points to"
    fi
    if [ -e "$cfg" ]; then
        [ -f "$cfg" ] || die "$cfg_rel is not a file"
        [ -r "$cfg" ] || die "cannot read $cfg_rel"
        check_markers "$cfg" "$cfg_rel"
        strip "$cfg" >"$stripped"
        pick_snippet "$stripped" >"$work/snippet"
        snippet=$(sed -n 1p "$work/snippet")
        glob=$(sed -n 2p "$work/snippet")
    fi
    snip="$root$snippet"
    ours=
    if [ -n "$snippet" ] && [ -e "$snip" ]; then
        if [ "$(sed -n 1p "$snip")" = "$SNIPPET_HEAD" ]; then
            ours=1
        elif [ "$action" = install ] && ! defines_runtime wasmtime "$snip"; then
            die "$snippet exists and was not written by install.sh; move it away or remove the imports line"
        fi
    fi

    if [ "$action" = uninstall ]; then
        if [ -n "$ours" ]; then
            drop "$snip"
            say "removed $snippet"
        fi
        [ -e "$cfg" ] || return 0
        if [ ! -s "$stripped" ] && grep -q "^$BEGIN.*\[created the file\]" "$cfg"; then
            drop "$cfg"
            say "removed $cfg_rel (install.sh had created it)"
        else
            update "$cfg" "$stripped" "removed the wasmtime runtime from $cfg_rel"
        fi
        return 0
    fi

    # A config that install.sh created (and nothing else since) is made
    # anew, with the version it has.
    if [ -e "$cfg" ] && [ ! -s "$stripped" ] && grep -q "^$BEGIN.*\[created the file\]" "$cfg"; then
        version=$(cfg_version "$cfg")
    elif [ ! -e "$cfg" ]; then
        version=$(implicit_version) || exit 1
        [ "$version" = 3 ] || version=2
    else
        version=
    fi
    if [ -n "$version" ]; then
        expect=1
        : >"$stripped"
        block " [created the file]" "$version" "version = $version" >"$work/new"
        update "$cfg" "$work/new" "created $cfg_rel (config version $version) with the wasmtime runtime"
        return 0
    fi

    # Someone else's wasmtime runtime, in the config or in what it imports.
    others=
    if defines_runtime wasmtime "$stripped"; then
        others=$cfg_rel
    elif [ -n "$snippet" ]; then
        for f in "$root${glob%/*}"/${glob##*/}; do
            [ -f "$f" ] && [ "$f" != "$snip" ] || continue
            if defines_runtime wasmtime "$f"; then
                others=${f#"$root"}
                break
            fi
        done
        if [ -z "$others" ] && [ -z "$ours" ] && [ -e "$snip" ]; then
            others=$snippet
        fi
    fi
    if [ -n "$others" ]; then
        say "$others already defines a runtime named wasmtime (not added by install.sh): leaving it alone"
        if [ -n "$ours" ]; then
            drop "$snip"
            say "removed $snippet (it would define wasmtime twice)"
        fi
        update "$cfg" "$stripped" "removed the earlier wasmtime block from $cfg_rel (it would define wasmtime twice)"
        return 0
    fi

    version=$(cfg_version "$stripped")
    layout=$version
    case "$version" in
    '') layout=$(implicit_version) || exit 1 ;;
    1 | 2 | 3) ;;
    *) die "$cfg_rel has version = $version, which install.sh does not know (1, 2 and 3 are)" ;;
    esac

    expect=1
    # containerd 1.x lets an imported file's plugin section replace the main
    # file's whole section (the CRI plugin's sandbox image, its runc, ...),
    # while 2.x merges them: only a version 3 config gets a file of its own.
    if [ -n "$snippet" ] && [ "$layout" != 3 ]; then
        say "$cfg_rel imports $glob, but containerd 1.x would let an imported CRI section replace the main one: adding the runtime to $cfg_rel itself"
        if [ -n "$ours" ]; then
            drop "$snip"
            say "removed $snippet"
        fi
        snippet=
    fi
    if [ -n "$snippet" ]; then
        {
            echo "$SNIPPET_HEAD"
            [ -z "$version" ] || echo "version = $version"
            printf '[%s.containerd.runtimes.wasmtime]\n  runtime_type = "%s"\n' "$(cri_key "$layout")" "$RUNTIME_TYPE"
        } >"$work/new"
        update "$snip" "$work/new" "wrote the wasmtime runtime to $snippet (imported by $cfg_rel through $glob)"
        update "$cfg" "$stripped" "removed the earlier wasmtime block from $cfg_rel (it now lives in $snippet)"
        return 0
    fi

    flags=
    if [ -s "$stripped" ] && [ -n "$(tail -c 1 "$stripped")" ]; then
        flags=" [added a final newline]"
    fi
    {
        cat "$stripped"
        [ -z "$flags" ] || echo
        block "$flags" "$layout" ""
    } >"$work/new"
    update "$cfg" "$work/new" "added the wasmtime runtime to $cfg_rel (config version ${version:-none, read as $layout})"
}

install_binary() {
    [ -f "$SHIM_SOURCE" ] || die "no shim binary at $SHIM_SOURCE (set SHIM_SOURCE)"
    dir="$root$SHIM_DIR"
    dest="$dir/$SHIM_NAME"
    mkdir -p "$dir" 2>/dev/null || die "cannot create $SHIM_DIR on the node"
    if [ -f "$dest" ] && cmp -s "$SHIM_SOURCE" "$dest"; then
        chmod 0755 "$dest"
        say "$SHIM_DIR/$SHIM_NAME is up to date"
        return 0
    fi
    tmp="$dir/.$SHIM_NAME.new.$$"
    cp "$SHIM_SOURCE" "$tmp" 2>/dev/null || {
        rm -f "$tmp"
        die "cannot write $SHIM_DIR/$SHIM_NAME on the node (read-only? set SHIM_DIR)"
    }
    chmod 0755 "$tmp"
    if [ "$VERIFY" = yes ]; then
        status=0
        out=$(host_run "$SHIM_DIR/.$SHIM_NAME.new.$$" -v 2>&1) || status=$?
        if [ "$status" -ne 0 ]; then
            rm -f "$tmp"
            die "the shim does not run on this node (it needs glibc >= 2.34 and libseccomp2): ${out:-exit status $status}"
        fi
    fi
    mv -f "$tmp" "$dest"
    sha256sum <"$dest" >"$(receipt)" || die "cannot write $SHIM_DIR/.$SHIM_NAME.installed"
    say "installed $SHIM_DIR/$SHIM_NAME"
}

# The receipt of the binary install put in place: its sha256 (coreutils
# and busybox). uninstall removes only a binary that still matches it, never one
# that someone else installed or changed since.
receipt() { echo "$root$SHIM_DIR/.$SHIM_NAME.installed"; }

uninstall_binary() {
    dest="$root$SHIM_DIR/$SHIM_NAME"
    if [ ! -e "$(receipt)" ]; then
        [ ! -e "$dest" ] || say "left $SHIM_DIR/$SHIM_NAME alone: install.sh did not install it"
        return 0
    fi
    if [ -f "$dest" ] && [ "$(sha256sum <"$dest")" = "$(cat "$(receipt)")" ]; then
        rm -f "$dest" || die "cannot remove $SHIM_DIR/$SHIM_NAME"
        say "removed $SHIM_DIR/$SHIM_NAME"
    elif [ -e "$dest" ]; then
        say "left $SHIM_DIR/$SHIM_NAME alone: it changed since install.sh installed it"
    fi
    rm -f "$(receipt)" || die "cannot remove $SHIM_DIR/.$SHIM_NAME.installed"
}

# The names of the CRI runtimes in `containerd config dump` output.
runtimes_in() {
    awk '/^[[:space:]]*\[.*\.containerd\.runtimes\./ {
            s = $0
            sub(/^[^]]*\.containerd\.runtimes\./, "", s)
            q = substr(s, 1, 1)
            if (q == "\"" || q == "'"'"'") {
                s = substr(s, 2)
                print substr(s, 1, index(s, q) - 1)
            } else {
                match(s, /^[^].]*/)
                print substr(s, 1, RLENGTH)
            }
        }' | sort -u
}

# Before changing anything: the node's containerd and the runtimes its
# current config gives it.
survey() {
    containerd_v=
    [ "$VERIFY" = yes ] || return 0
    containerd_v=$(host_run containerd --version 2>/dev/null) || containerd_v=
    [ -n "$containerd_v" ] || return 0
    { host_run containerd --config "$cfg_rel" config dump 2>/dev/null || true; } |
        runtimes_in >"$work/runtimes.old"
}

# Asks the node's containerd whether it accepts the changed config, still
# has every runtime it had and (after install) sees ours; puts the old
# files back if not.
verify_config() {
    [ "$VERIFY" = yes ] && changed || return 0
    v=$containerd_v
    if [ -z "$v" ]; then
        say "warning: no containerd on the node's PATH; not checking the new config"
        return 0
    fi
    if ! out=$(host_run containerd --config "$cfg_rel" config dump 2>&1); then
        restore
        die "containerd ($v) rejects the new config, so the old one is back: $(printf '%s\n' "$out" | tail -n 3)"
    fi
    if [ -n "$expect" ] && ! printf '%s\n' "$out" | grep -q "$RUNTIME_TYPE"; then
        restore
        die "containerd ($v) does not see the wasmtime runtime in the new config (a config version it does not read, or an imported file that replaces the CRI section?), so the old one is back"
    fi
    printf '%s\n' "$out" | runtimes_in >"$work/runtimes.new"
    lost=$(grep -v -x -F -f "$work/runtimes.new" "$work/runtimes.old" | grep -v -x wasmtime | tr '\n' ' ') || true
    if [ -n "$lost" ]; then
        restore
        die "with the new config containerd ($v) would lose its runtime(s) ${lost% }, so the old config is back"
    fi
}

restart_containerd() {
    changed || return 0
    if [ "$RESTART" = none ]; then
        say "containerd's config changed; not restarting it (RESTART=none)"
        return 0
    fi
    if [ ! -d "$root/run/systemd/system" ]; then
        # containerd reads its config only when it starts (SIGHUP does not reload it).
        say "the node does not run systemd: restart containerd yourself for the change to take effect"
        return 0
    fi
    say "restarting $CONTAINERD_SERVICE"
    if [ -z "$root" ]; then
        systemctl restart "$CONTAINERD_SERVICE" || die "systemctl restart $CONTAINERD_SERVICE failed"
    else
        # In the namespaces of the node's init, named through the node's
        # /proc under HOST_ROOT: the pod needs no hostPID for it.
        ns=$root/proc/1/ns
        nsenter --mount="$ns/mnt" --uts="$ns/uts" --ipc="$ns/ipc" --net="$ns/net" --pid="$ns/pid" \
            -- systemctl restart "$CONTAINERD_SERVICE" ||
            die "systemctl restart $CONTAINERD_SERVICE failed on the node (is the container privileged, with the node's / at HOST_ROOT?)"
    fi
}

action=${1:-}
[ $# -eq 1 ] || usage
case "$action" in
install | uninstall) ;;
-h | --help | help) sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
*) usage ;;
esac

root=${HOST_ROOT:-/}
root=${root%/}
[ -z "$root" ] || [ -d "$root" ] || die "HOST_ROOT $root is not a folder"
SHIM_SOURCE=${SHIM_SOURCE:-/opt/wasmtime-shim/$SHIM_NAME}
SHIM_DIR=${SHIM_DIR:-/usr/local/bin}
cfg_rel=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
case "$cfg_rel" in /*) ;; *) die "CONTAINERD_CONFIG must be an absolute path" ;; esac
cfg="$root$cfg_rel"
RESTART=${RESTART:-auto}
CONTAINERD_SERVICE=${CONTAINERD_SERVICE:-containerd}
VERIFY=${VERIFY:-yes}
case "$RESTART" in auto | none) ;; *) die "RESTART must be auto or none, not $RESTART" ;; esac
case "$VERIFY" in yes | no) ;; *) die "VERIFY must be yes or no, not $VERIFY" ;; esac

expect=
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM HUP

survey
if [ "$action" = install ]; then
    install_binary
    configure install
    verify_config install
    changed || say "$cfg_rel already has the wasmtime runtime"
else
    configure uninstall
    verify_config uninstall
    uninstall_binary
    changed || say "$cfg_rel has no wasmtime runtime from install.sh"
fi
restart_containerd

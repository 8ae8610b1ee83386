#!/usr/bin/env bash
# Install and start the real services forge is tested against, on Debian bookworm as root:
#   - a Docker engine: whichever answers `docker info` (or on its socket) is used as it is;
#     only when none answers and none is installed, Debian's docker.io
#     (dockerd --bridge=none --iptables=false). A machine with Docker CE (docker-ce,
#     containerd.io) never gets docker.io, which would replace containerd.io.
#   - QEMU user emulation via binfmt_misc (qemu-aarch64, qemu-arm; flags must include F)
#   - an OCI registry (Debian's docker-registry) on 127.0.0.1:5000, delete enabled
#   - a second, htpasswd-protected registry on 127.0.0.1:5001 (user forge / forge-secret)
#   - busybox rootfs tarballs for amd64, arm64 and armhf built from Debian packages
#   - umoci and skopeo: independent readers of the OCI layouts forge writes (tests use them)
#   - buildah: the daemonless executor (plugins/buildah.py; its storage lives in forge's cache)
#
# Idempotent: anything already installed/running/built is left alone, so a second run is fast.
# Exits 0 only when every service answers.
#
# Environment:
#   FORGE_TESTDATA          where the rootfs tarballs go (default /var/cache/forge-testdata)
#   FORGE_AUTH_REGISTRY=0   do not start the htpasswd-protected registry on :5001
#   FORGE_SERVICES_PLAN=engine
#                           change nothing: print what would be done about the engine
#                           (use / start / install docker.io / refuse ...) and exit
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
umask 022

TESTDATA="${FORGE_TESTDATA:-/var/cache/forge-testdata}"
REGISTRY_ADDR="127.0.0.1:5000"
AUTH_REGISTRY_ADDR="127.0.0.1:5001"
AUTH_USER="forge"
AUTH_PASSWORD="forge-secret"
WANT_AUTH_REGISTRY="${FORGE_AUTH_REGISTRY:-1}"
PLAN="${FORGE_SERVICES_PLAN:-}"
CONF_DIR="/etc/forge"
DOCKERD_LOG="/var/log/forge-dockerd.log"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ $(id -u) -ne 0 && $PLAN != engine ]]; then
    die "must run as root (installs packages, mounts binfmt_misc, starts dockerd)"
fi

# ---------------------------------------------------------------- packages
APT_UPDATED=0
apt_update() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        local try
        for try in 1 2; do
            if apt-get update -qq; then
                APT_UPDATED=1
                return 0
            fi
            log "apt-get update failed (try $try/2), retrying in 3 s"
            sleep 3
        done
        # Some index (often a foreign arch of the security suite mid-sync) failed: go on
        # with what was fetched; a later install/download fails loudly if it really matters.
        log "WARNING: apt-get update kept failing; continuing with the indexes it could fetch"
        APT_UPDATED=1
    fi
}

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

ensure_packages() {
    local missing=() p
    for p in "$@"; do
        is_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        apt_update
        log "apt-get install ${missing[*]}"
        # Keep maintainer scripts from starting docker/docker-registry with Debian's defaults
        # (bridge networking, :5000 with auth): this script starts them its own way below.
        local policy=/usr/sbin/policy-rc.d own_policy=0
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 0755 "$policy"
            own_policy=1
        fi
        local rc=0
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
        if [[ $own_policy -eq 1 ]]; then rm -f "$policy"; fi
        [[ $rc -eq 0 ]] || die "apt-get install ${missing[*]} failed (exit $rc)"
    fi
}

if [[ $PLAN != engine ]]; then
    ensure_packages qemu-user-static binfmt-support docker-registry busybox-static \
        graphviz debootstrap pigz curl ca-certificates gcc libc6-dev zlib1g-dev umoci skopeo openssh-server \
        buildah
fi

# ---------------------------------------------------------------- docker engine
# Whether an engine is there is decided by asking it, never by which package is installed:
# Docker CE (docker-ce + containerd.io), Debian's docker.io, or anything at DOCKER_HOST.
DOCKER_SOCK=/var/run/docker.sock
case ${DOCKER_HOST:-} in
    unix://*) DOCKER_SOCK=${DOCKER_HOST#unix://} ;;
    "") ;;
    *) DOCKER_SOCK="" ;;  # tcp:// or ssh://: no local socket to ask or to start
esac

socket_answers() {  # the engine API on the socket, without the docker command
    [[ -n $DOCKER_SOCK && -S $DOCKER_SOCK ]] || return 1
    [[ $(curl -s -m 5 --unix-socket "$DOCKER_SOCK" http://localhost/_ping 2>/dev/null) == OK ]]
}

docker_answers() {
    if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
        return 0
    fi
    socket_answers
}

engine_plan() {  # prints: use | remote-down | start | refuse <package> | install
    if docker_answers; then
        echo use  # whatever engine it is, it is used as it is: nothing installed over it
    elif [[ -z $DOCKER_SOCK ]]; then
        echo remote-down
    elif command -v dockerd >/dev/null 2>&1; then
        echo start  # an engine is installed (docker.io, docker-ce, ...) but not running
    else
        local p
        for p in docker-ce docker-ce-cli containerd.io moby-engine; do
            if is_installed "$p"; then echo "refuse $p"; return 0; fi
        done
        echo install
    fi
}

ENGINE_PLAN=$(engine_plan)
if [[ $PLAN == engine ]]; then
    echo "engine: $ENGINE_PLAN"
    exit 0
fi
case $ENGINE_PLAN in
    use)
        command -v docker >/dev/null 2>&1 \
            || log "WARNING: an engine answers on $DOCKER_SOCK but there is no docker command (install your engine's CLI, e.g. docker-ce-cli)"
        ;;
    remote-down)
        die "DOCKER_HOST=$DOCKER_HOST does not answer \`docker info\`; start that engine (this script starts only a local one)" ;;
    start) ;;
    refuse*)
        die "${ENGINE_PLAN#refuse } is installed but no engine answers and there is no dockerd: finish that installation (e.g. apt-get install docker-ce) rather than install Debian's docker.io, which would replace it" ;;
    install)
        log "no Docker engine answers and none is installed: installing Debian's docker.io"
        ensure_packages docker.io ;;
esac

start_dockerd() {
    if docker_answers; then
        return 0
    fi
    log "starting dockerd (log: $DOCKERD_LOG)"
    local host=()
    [[ $DOCKER_SOCK == /var/run/docker.sock ]] || host=(--host "unix://$DOCKER_SOCK")
    # Fully detached so that callers (CI) do not wait on its file descriptors.
    setsid -f dockerd --bridge=none --iptables=false "${host[@]}" </dev/null >>"$DOCKERD_LOG" 2>&1
    local i
    for i in $(seq 1 60); do
        if docker_answers; then
            log "dockerd answers after ${i}s"
            return 0
        fi
        sleep 1
    done
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    die "dockerd did not answer within 60 s (see $DOCKERD_LOG)"
}
start_dockerd

# ---------------------------------------------------------------- binfmt / qemu
BINFMT_DIR=/proc/sys/fs/binfmt_misc
if [[ ! -e $BINFMT_DIR/register ]]; then
    log "mounting binfmt_misc on $BINFMT_DIR"
    mount -t binfmt_misc binfmt_misc "$BINFMT_DIR"
fi

check_binfmt() {  # $1 = qemu-aarch64 | qemu-arm ; prints nothing, returns 0 when enabled with F
    local f="$BINFMT_DIR/$1"
    [[ -r $f ]] || return 1
    grep -qx enabled "$f" || return 1
    grep -Eq '^flags: *[A-Z]*F' "$f" || return 1
}

for entry in qemu-aarch64 qemu-arm; do
    if ! check_binfmt "$entry"; then
        log "update-binfmts --enable $entry"
        update-binfmts --enable "$entry" || true
    fi
    if ! check_binfmt "$entry"; then
        cat "$BINFMT_DIR/$entry" >&2 2>/dev/null || true
        die "binfmt entry $entry is missing, disabled or lacks the F (fix-binary) flag"
    fi
done

# ---------------------------------------------------------------- registries
REGISTRY_BIN=""
for cand in /usr/bin/docker-registry $(dpkg -L docker-registry 2>/dev/null | grep -E '/bin/[^/]+$' || true); do
    if [[ -x $cand ]]; then REGISTRY_BIN=$cand; break; fi
done
[[ -n $REGISTRY_BIN ]] || die "docker-registry binary not found (dpkg -L docker-registry)"

http_code() {  # $1 = url ; prints HTTP status code or 000
    curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" 2>/dev/null || true
}

write_registry_config() {  # $1 conf path, $2 addr, $3 rootdir, $4 htpasswd path or ""
    local conf=$1 addr=$2 root=$3 htpasswd=${4:-}
    {
        echo "version: 0.1"
        echo "log:"
        echo "  level: info"
        echo "  fields:"
        echo "    service: forge-registry"
        # No blob descriptor cache: tests tamper with the storage and must see it at once.
        echo "storage:"
        echo "  filesystem:"
        echo "    rootdirectory: $root"
        echo "  delete:"
        echo "    enabled: true"
        echo "http:"
        echo "  addr: $addr"
        echo "  headers:"
        echo "    X-Content-Type-Options: [nosniff]"
        if [[ -n $htpasswd ]]; then
            echo "auth:"
            echo "  htpasswd:"
            echo "    realm: forge-registry-realm"
            echo "    path: $htpasswd"
        fi
    } >"$conf"
}

# $1 name (forge-registry | forge-registry-auth), $2 addr, $3 expected code, $4 htpasswd path or ""
start_registry() {
    local name=$1 addr=$2 expect=$3 htpasswd=${4:-}
    local url="http://$addr/v2/" code
    code=$(http_code "$url")
    if [[ $code == "$expect" ]]; then
        if [[ ! -s /run/$name.root ]]; then
            log "WARNING: something answers on $url but /run/$name.root is missing (not started by this script?)"
        fi
        return 0
    fi
    if [[ $code != 000 ]]; then
        die "$url answers HTTP $code, expected $expect: another service holds $addr"
    fi
    local root conf="$CONF_DIR/$name.yml" logf="/var/log/$name.log" old
    # The registry that used the previous storage root is gone: drop its data.
    old=$(cat "/run/$name.root" 2>/dev/null || true)
    if [[ $old == /var/tmp/"$name".* && -d $old ]]; then rm -rf "$old"; fi
    root=$(mktemp -d "/var/tmp/$name.XXXXXX")
    mkdir -p "$CONF_DIR"
    write_registry_config "$conf" "$addr" "$root" "$htpasswd"
    log "starting $REGISTRY_BIN on $addr (storage root $root, config $conf, log $logf)"
    setsid -f "$REGISTRY_BIN" serve "$conf" </dev/null >>"$logf" 2>&1
    echo "$root" >"/run/$name.root"
    local i
    for i in $(seq 1 100); do
        code=$(http_code "$url")
        if [[ $code == "$expect" ]]; then
            return 0
        fi
        sleep 0.2
    done
    tail -n 30 "$logf" >&2 || true
    die "registry on $addr did not answer (last HTTP code $code, see $logf)"
}

make_htpasswd() {  # $1 path
    local path=$1
    if [[ -s $path ]]; then return 0; fi
    mkdir -p "$(dirname "$path")"
    if python3 -c 'import bcrypt' 2>/dev/null; then
        python3 - "$path" "$AUTH_USER" "$AUTH_PASSWORD" <<'EOF'
import sys

import bcrypt

path, user, password = sys.argv[1:4]
hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
with open(path, "w") as f:
    f.write(f"{user}:{hashed}\n")
EOF
    else
        command -v htpasswd >/dev/null 2>&1 || ensure_packages apache2-utils
        htpasswd -B -b -c "$path" "$AUTH_USER" "$AUTH_PASSWORD" 2>/dev/null
    fi
    chmod 0644 "$path"
}

start_registry forge-registry "$REGISTRY_ADDR" 200 ""
if [[ $WANT_AUTH_REGISTRY != 0 ]]; then
    make_htpasswd "$CONF_DIR/registry-auth.htpasswd"
    start_registry forge-registry-auth "$AUTH_REGISTRY_ADDR" 401 "$CONF_DIR/registry-auth.htpasswd"
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -u "$AUTH_USER:$AUTH_PASSWORD" \
        "http://$AUTH_REGISTRY_ADDR/v2/" || true)
    [[ $code == 200 ]] || die "auth registry rejects $AUTH_USER's credentials (HTTP $code)"
fi

# ---------------------------------------------------------------- busybox rootfs tarballs
# Debian arch -> tarball name suffix
BUSYBOX_ARCHES=(amd64 arm64 armhf)

build_busybox_tarballs() {
    mkdir -p "$TESTDATA"
    local need=() a
    for a in "${BUSYBOX_ARCHES[@]}"; do
        [[ -s $TESTDATA/busybox-$a.tar ]] || need+=("$a")
    done
    [[ ${#need[@]} -gt 0 ]] || return 0

    local native foreign_added=0
    native=$(dpkg --print-architecture)
    for a in "${need[@]}"; do
        if [[ $a != "$native" ]] && ! dpkg --print-foreign-architectures | grep -qx "$a"; then
            log "dpkg --add-architecture $a"
            dpkg --add-architecture "$a"
            foreign_added=1
        fi
    done
    if [[ $foreign_added -eq 1 ]]; then APT_UPDATED=0; fi
    apt_update

    local work
    work=$(mktemp -d /var/tmp/forge-busybox.XXXXXX)
    # apt-get download drops privileges to _apt, which must be able to write here
    if id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
    BUSYBOX_WORK=$work
    trap 'rm -rf "${BUSYBOX_WORK:-/nonexistent}"' EXIT

    # amd64 busybox lists the applets used for every arch (same Debian version everywhere).
    (cd "$work" && apt-get download -qq "busybox-static:$native" >/dev/null)
    mkdir -p "$work/x-$native"
    dpkg-deb -x "$work"/busybox-static_*_"$native".deb "$work/x-$native"
    local applets
    applets=$("$work/x-$native/bin/busybox" --list | grep -vx busybox | LC_ALL=C sort -u)

    for a in "${need[@]}"; do
        if [[ $a != "$native" ]]; then
            (cd "$work" && apt-get download -qq "busybox-static:$a" >/dev/null)
            mkdir -p "$work/x-$a"
            dpkg-deb -x "$work"/busybox-static_*_"$a".deb "$work/x-$a"
        fi
        local root="$work/root-$a"
        mkdir -p "$root"/{bin,etc,root,tmp,usr/bin,proc,sys,dev}
        install -m 0755 "$work/x-$a/bin/busybox" "$root/bin/busybox"
        local app
        while IFS= read -r app; do
            [[ -n $app ]] && ln -sf busybox "$root/bin/$app"
        done <<<"$applets"
        ln -sf ../../bin/env "$root/usr/bin/env"
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
            >"$root/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
        chmod 0700 "$root/root"
        chmod 1777 "$root/tmp"
        chmod 0644 "$root/etc/passwd" "$root/etc/group"
        find "$root" -exec touch -h -d @0 {} +
        local out="$TESTDATA/busybox-$a.tar"
        tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
            --format=gnu -cf "$out.tmp" bin dev etc proc root sys tmp usr
        mv -f "$out.tmp" "$out"
        log "built $out ($(stat -c %s "$out") bytes, sha256 $(sha256sum "$out" | cut -c1-16)…)"
    done
    rm -rf "$work"
    BUSYBOX_WORK=""
}
build_busybox_tarballs

# ---------------------------------------------------------------- status
ok=1
row() { printf '  %-22s %s\n' "$1" "$2"; }

echo "forge services:"
if engine=$(timeout 20 docker version --format '{{.Server.Version}}' 2>/dev/null); then
    row "docker engine" "$engine"
elif socket_answers; then
    row "docker engine" "answers on $DOCKER_SOCK (no docker command)"
else
    row "docker engine" "DOWN"; ok=0
fi
for tool in umoci skopeo buildah; do
    if version=$("$tool" --version 2>/dev/null | head -n 1); then
        row "$tool" "$version"
    else
        row "$tool" "MISSING"; ok=0
    fi
done
if [[ $(http_code "http://$REGISTRY_ADDR/v2/") == 200 ]]; then
    row "registry" "http://$REGISTRY_ADDR (root $(cat /run/forge-registry.root 2>/dev/null || echo '?'))"
else
    row "registry" "DOWN http://$REGISTRY_ADDR"; ok=0
fi
if [[ $WANT_AUTH_REGISTRY != 0 ]]; then
    if [[ $(http_code "http://$AUTH_REGISTRY_ADDR/v2/") == 401 ]]; then
        row "auth registry" "http://$AUTH_REGISTRY_ADDR user $AUTH_USER (root $(cat /run/forge-registry-auth.root 2>/dev/null || echo '?'))"
    else
        row "auth registry" "DOWN http://$AUTH_REGISTRY_ADDR"; ok=0
    fi
fi
for entry in qemu-aarch64 qemu-arm; do
    if check_binfmt "$entry"; then
        row "binfmt $entry" "enabled, $(grep '^flags:' "$BINFMT_DIR/$entry"), $(grep '^interpreter' "$BINFMT_DIR/$entry" | cut -d' ' -f2)"
    else
        row "binfmt $entry" "MISSING"; ok=0
    fi
done
for a in "${BUSYBOX_ARCHES[@]}"; do
    if [[ ! -s $TESTDATA/busybox-$a.tar ]]; then
        row "testdata" "MISSING $TESTDATA/busybox-$a.tar"; ok=0
    fi
done
row "testdata" "$TESTDATA ($(cd "$TESTDATA" && ls busybox-*.tar | tr '\n' ' '))"

if [[ $ok -ne 1 ]]; then
    die "some services are down"
fi
echo "all services up"

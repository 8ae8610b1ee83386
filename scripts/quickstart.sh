#!/usr/bin/env bash
# The README's first command: from a fresh Debian bookworm machine (as root) to a built
# multi-stage Atom image for aarch64, and how to run it.
#
#   scripts/quickstart.sh [TARGET]        default //atom:graphics-aarch64
#
# 1. scripts/services.sh: Docker engine, QEMU binfmt (aarch64, arm), local registry
# 2. pip install -e .   (forge itself)
# 3. in examples/atom (the Atom example, a workspace of its own, laid out like the Atom
#    repository): forge build TARGET --load, then the production image built from it
#
# The first build bootstraps Debian bookworm for aarch64 (debootstrap's second stage runs
# under QEMU: several minutes); every later build reuses it from the cache. Set
# FORGE_CACHE to choose where that cache lives (default ~/.cache/forge).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORKSPACE_DIR="examples/atom"   # the Atom example's WORKSPACE.toml; TARGET is one of its labels
TARGET="${1:-//atom:graphics-aarch64}"
PRODUCTION="${TARGET}-production"

log() { printf '\n[quickstart] %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    echo "[quickstart] must run as root (services.sh starts dockerd; debootstrap needs root)" >&2
    exit 1
fi

log "starting the services (engine, QEMU binfmt, registry)"
bash scripts/services.sh

log "installing forge"
python3 -m pip install -q -e .

cd "${WORKSPACE_DIR}"
log "cd ${WORKSPACE_DIR} && forge build ${TARGET} --load"
start=$(date +%s)
forge build "${TARGET}" --load
log "built in $(( $(date +%s) - start ))s"

package="${TARGET#//}"
package="${package%%:*}"
name="${TARGET##*:}"
tag="forge/${package}/${name}:latest"
platform=$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "${tag}")

# The production image (minimize + production) exists for targets that declare one.
have_production=0
if forge query targets "//${package}:all" 2>/dev/null | awk '{print $2}' | grep -qx "${PRODUCTION}"; then
    log "cd ${WORKSPACE_DIR} && forge build ${PRODUCTION} --load"
    forge build "${PRODUCTION}" --load
    have_production=1
fi

digest=$(python3 - "${package}" "${name}" <<'EOF'
import json, sys
from pathlib import Path

index = json.loads((Path("forge-out") / sys.argv[1] / sys.argv[2] / "index.json").read_text())
print(index["manifests"][0]["digest"])
EOF
)

cat <<EOF

[quickstart] done.

  workspace ${WORKSPACE_DIR}/   (its own WORKSPACE.toml; labels are relative to it)
  image     ${TARGET}
  platform  ${platform}
  digest    ${digest}
  layout    ${WORKSPACE_DIR}/forge-out/${package}/${name}/   (an OCI image layout)
  loaded as ${tag}

Run it (through QEMU when the platform is foreign to this machine):

  docker run --rm --platform ${platform} ${tag} atom-hello
EOF
if [[ ${have_production} -eq 1 ]]; then
    cat <<EOF

The slim production image (minimize + production):

  docker run --rm --platform ${platform} forge/${package}/${name}-production:latest atom-hello
  docker image ls 'forge/${package}/*'       # compare the sizes
EOF
fi
cat <<EOF

Build it again: nothing runs (every step is a cache hit):

  cd ${WORKSPACE_DIR} && forge build ${TARGET}

Edit one Dockerfile (e.g. ${WORKSPACE_DIR}/atom/graphics/20-Dockerfile-display) and build
again: that file's step and the ones after it rebuild, nothing in atom/stock/.
EOF

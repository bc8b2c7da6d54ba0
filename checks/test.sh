#!/usr/bin/env bash
# The whole test suite: lint, unit and in-process integration tests, then the
# end-to-end checks against the release binaries. It first installs what
# the checks need (checks/install.sh: Bazel, Nix, deadnix, nixpkgs-fmt,
# BuildStream, ...; as root); a check whose tool is missing fails with the
# command that installs it. Each step's time is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
. checks/lib.sh

step_started=
step_name=
step() {
  [ -n "$step_name" ] && log "   ($step_name: $((SECONDS - step_started))s)"
  step_name=$*
  step_started=$SECONDS
  log "== $*"
}

step "installing what the checks need"
checks/install.sh
export PATH=$HOME/.cargo/bin:$PATH

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "Nix: parse, deadnix, nixpkgs-fmt, flake.lock (and module evaluation with NIXPKGS_LIB)"
checks/nix.sh
step "cargo test --workspace"
cargo test --workspace
step "privilege separation (root only)"
checks/privileged.sh
step "release build"
build_release
step "bb farm creates its users when they are missing (root only)"
checks/farm-users.sh
step "hostile-input suite against bb farm (root only)"
checks/hostile.sh
step "fault suite: workers, runners, the farm and bb-storage killed mid-batch (root only)"
checks/faults.sh
step "Bazel, cache-only, against a standalone bb-storage"
checks/bazel/cache-only.sh
step "Bazel through bb farm (remote execution)"
checks/bazel/remote-execution.sh
step "Bazel and bb through bb farm --tls and --require-token: only the farm's own clients get in"
checks/bazel/secure.sh
step "Bazel downloads through the farm's Remote Asset API (--experimental_remote_downloader)"
checks/bazel/remote-downloader.sh
step "storage over three bb-storage nodes, two copies each: a node killed mid-build, its copies repaired"
checks/storage-cluster.sh
step "storage in a SeaweedFS bucket behind the farm's disk: the state directory wiped, the cache survives"
checks/object-storage.sh
step "the status page in headless Chromium: overview, an operation, its action page, its inputs, the charts"
checks/status-page.sh
step "multi-host farm in network namespaces (root only)"
checks/multihost.sh
step "BuildStream 2.8.1 through bb farm --chroot and the separate programs (root only)"
checks/buildstream.sh
step "done"
log "all checks passed in ${SECONDS}s"

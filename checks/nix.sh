#!/usr/bin/env bash
# What of the Nix side can be checked without nixpkgs: every .nix file parses,
# deadnix finds no dead code, nixpkgs-fmt finds nothing to reformat, and
# flake.lock pins what flake.nix declares. With NIXPKGS_LIB naming a nixpkgs
# `lib` directory, the NixOS modules are also evaluated (checks/module-eval.nix).
# The flake's builds and VM tests need a Nix machine: `nix flake check` there.
set -euo pipefail
cd "$(dirname "$0")/.."
. checks/lib.sh

require_tool nix-instantiate "apt-get install -y nix-bin"
require_tool deadnix "cargo install deadnix"
require_tool nixpkgs-fmt "cargo install nixpkgs-fmt"

mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.nix')
[ ${#files[@]} -gt 0 ] || die "no .nix files found"
for file in "${files[@]}"; do
  nix-instantiate --parse "$file" >/dev/null || die "$file does not parse"
done
log "${#files[@]} .nix files parse"

deadnix --fail "${files[@]}" || die "deadnix found unused code (see above)"
nixpkgs-fmt --check "${files[@]}" || die "nixpkgs-fmt would reformat the files above; run: nixpkgs-fmt ${files[*]}"

# The VM test driver's execute() returns once the command's output closes,
# so a job sent to the background there must not keep it open.
held=$(grep -nE '&"' checks/vm/*.nix | grep -vE '>/dev/null 2>&1 &"' || true)
[ -z "$held" ] || die "background jobs in VM tests keep the driver's output open (redirect it): $held"

[ "$(nix-instantiate --eval --strict checks/flake-lock.nix)" = true ] || die "flake.lock check failed"
log "flake.lock pins every input of flake.nix"

if [ -n "${NIXPKGS_LIB:-}" ]; then
  [ -f "$NIXPKGS_LIB/default.nix" ] || die "NIXPKGS_LIB=$NIXPKGS_LIB is not a nixpkgs lib directory"
  [ "$(nix-instantiate --eval --strict checks/module-eval.nix --arg lib "import $NIXPKGS_LIB")" = true ] ||
    die "module evaluation failed"
  log "NixOS modules evaluate against $NIXPKGS_LIB"
  # The VM tests' scripts run only on a Nix machine: here, they must at
  # least be Python that names only the test's nodes.
  require_tool python3 "apt-get install -y python3"
  nix-instantiate --eval --strict --json checks/module-eval.nix --arg lib "import $NIXPKGS_LIB" --arg vmScripts true |
    python3 checks/vm/lint-scripts.py || die "a VM test script does not hold (see above)"
else
  log "NOT RUN: NixOS module evaluation needs NIXPKGS_LIB=<nixpkgs>/lib (see README, 'Checking the Nix side')"
fi

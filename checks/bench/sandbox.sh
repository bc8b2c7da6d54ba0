#!/usr/bin/env bash
# What the sandbox costs per action: the no-op benchmark against `bb farm`
# and `bb farm --unsandboxed`, alternating, ROUNDS times (default 3).
exec "$(dirname "$0")/compare.sh" "${1:-3}" sandboxed= unsandboxed=--unsandboxed

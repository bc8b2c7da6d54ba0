#!/usr/bin/env bash
# What TLS and a token cost per action: the no-op benchmark against
# `bb farm` (plaintext, no credentials) and `bb farm --tls` (TLS, a token on
# every call, mutual TLS for the workers), alternating, ROUNDS times
# (default 3). Each client keeps one connection, as Bazel does.
exec "$(dirname "$0")/compare.sh" "${1:-3}" plaintext= tls=--tls

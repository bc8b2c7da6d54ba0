#!/bin/sh
set -eu
out=$(app/hello)
case "$out" in
  "hello from the build farm (adler32 "*) echo "ok: $out" ;;
  *) echo "unexpected output: $out" >&2; exit 1 ;;
esac

# Test credentials, made in a derivation and so in the Nix store (for tests
# only: the modules keep real ones out of it), copied at boot to /run/keys,
# where a farm description expects the operator's files.
credentials: files: {
  systemd.tmpfiles.rules = [ "d /run/keys 0750 root keys -" ]
    ++ map (file: "C /run/keys/${file} 0400 root root - ${credentials}/${file}") files;
}

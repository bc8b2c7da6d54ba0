# The example farm (from the farm function) made secure: TLS everywhere,
# workers known by their certificates alone, clients by their tokens, and a
# storage node the scheduler keeps the CAS and Action Cache on, reached with
# the scheduler's own token. An impostor host runs a worker with a client's
# token and no certificate. The client builds; without a token it is
# refused; plaintext is refused; the impostor never gets work; the storage
# node holds what the client stored and serves it to the scheduler alone.
#
# The credentials are made in a derivation, so they are in the Nix store,
# and copied to /run/keys at boot, where the description says they are:
# acceptable for a test, and exactly what the modules avoid for real hosts.
{ pkgs, module, packages }:
let
  inherit (pkgs) lib;
  farm = import ./hosts.nix { inherit lib module packages; } (import ./farms.nix { inherit lib; }).secure
    (host: keys (hostKeys host));
  # Each gets a certificate of its own.
  servers = lib.attrNames farm;
  credentials = pkgs.runCommand "bb-test-credentials" { nativeBuildInputs = [ pkgs.openssl ]; } ''
    mkdir $out
    cd $out
    ec() { echo "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"; }
    openssl req -x509 $(ec) -days 3650 -subj /CN=test-ca -keyout ca-key.pem -out bb-ca.pem
    for host in ${toString servers}; do
      openssl req $(ec) -subj "/CN=$host" -keyout "$host.key" -out "$host.csr"
      printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' "$host" > "$host.ext"
      openssl x509 -req -in "$host.csr" -CA bb-ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
        -extfile "$host.ext" -out "$host.pem"
    done
    openssl rand -hex 32 > client-token
    openssl rand -hex 32 > bb-scheduler-token
    hash() { tr -d '\n' < "$1" | sha256sum | cut -d' ' -f1; }
    printf 'ci = "%s"\nscheduler = "%s"\n' "$(hash client-token)" "$(hash bb-scheduler-token)" > bb-tokens.toml
  '';
  keys = import ./keys.nix credentials;
  hostKeys = host: [ "bb-ca.pem" "${host}.pem" "${host}.key" ]
    ++ lib.optionals (host == "scheduler") [ "bb-tokens.toml" "bb-scheduler-token" ]
    ++ lib.optionals (host == "storage1") [ "bb-tokens.toml" ];
in
pkgs.testers.runNixOSTest {
  name = "buildbarn-secure-farm";
  nodes = farm // {
    scheduler = { pkgs, ... }: {
      imports = [ farm.scheduler ];
      environment.systemPackages = [ pkgs.curl pkgs.jq ];
    };
    # Not in the description: a worker the farm does not know, with the
    # CA and a client's token.
    impostor = { ... }: {
      imports = [ module (import ./programs.nix packages) ];
      services.buildbarn.worker = {
        enable = true;
        schedulerEndpoint = "grpcs://scheduler:8983";
        storageEndpoint = "grpcs://scheduler:8980";
        credentials = { ca = "${credentials}/bb-ca.pem"; token = "${credentials}/client-token"; };
      };
    };
    client = { ... }: {
      environment.systemPackages = [ packages.bb ];
    };
  };

  testScript = ''
    status = "curl -sf --cacert ${credentials}/bb-ca.pem -H \"Authorization: Bearer $(cat ${credentials}/client-token)\" https://scheduler:7982/api/status"
    start_all()
    storage1.wait_for_unit("bb-storage.service")
    scheduler.wait_for_unit("bb-scheduler.service")
    scheduler.wait_for_open_port(8980)
    for worker in (worker1, worker2):
        worker.wait_for_unit("bb-worker.service")
    scheduler.wait_until_succeeds(f"{status} | jq -e '[.workers[].labels.host] | unique == [\"worker1\", \"worker2\"]'")
    tls = "--tls-ca ${credentials}/bb-ca.pem"
    bb = f"--endpoint grpcs://scheduler:8980 {tls} --env PATH=/run/current-system/sw/bin"

    with subtest("a client with a token builds"):
        out = client.succeed(f"bb exec {bb} --token-file ${credentials}/client-token -- echo secure-$HOSTNAME")
        assert "secure-" in out, out

    with subtest("a client without one is refused"):
        out = client.fail(f"bb exec {bb} -- true 2>&1")
        assert "not authenticated" in out, out

    with subtest("plaintext to the TLS port is refused"):
        client.fail("bb exec --endpoint grpc://scheduler:8980 --token-file ${credentials}/client-token -- true")

    with subtest("a host posing as a worker without a certificate is refused"):
        impostor.wait_until_succeeds("journalctl -u bb-worker.service | grep -qi 'not authenticated'")
        hosts = scheduler.succeed(f"{status} | jq -c '[.workers[].labels.host] | unique'").strip()
        assert hosts == '["worker1","worker2"]', hosts

    with subtest("the storage node holds what clients store, and serves the scheduler alone"):
        client.succeed("echo stored-through-the-scheduler > /tmp/blob")
        digest = client.succeed(f"bb cas put --endpoint grpcs://scheduler:8980 {tls} --token-file ${credentials}/client-token /tmp/blob").strip()
        node = f"--endpoint grpcs://storage1:8981 {tls}"
        out = client.succeed(f"bb cas get {node} --token-file ${credentials}/bb-scheduler-token {digest}")
        assert out == "stored-through-the-scheduler\n", out
        client.fail(f"bb cas get {node} --token-file ${credentials}/client-token {digest}")
  '';
}

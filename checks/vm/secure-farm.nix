# A farm with TLS everywhere: a scheduler whose certificate, client CA and
# tokens come from files (LoadCredential=), a worker host presenting its
# certificate, a client with a token, and an impostor host that runs a
# worker with a client token and no certificate. The client builds; without
# a token it is refused; the impostor never gets work.
#
# The credentials are made in a derivation, so they are in the Nix store:
# acceptable for a test, and exactly what the modules avoid for real hosts.
{ pkgs, module, packages }:
let
  credentials = pkgs.runCommand "bb-test-credentials" { nativeBuildInputs = [ pkgs.openssl ]; } ''
    mkdir $out
    cd $out
    ec() { echo "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"; }
    openssl req -x509 $(ec) -days 3650 -subj /CN=test-ca -keyout ca-key.pem -out ca.pem
    issue() {
      openssl req $(ec) -subj "/CN=$1" -keyout "$1-key.pem" -out "$1.csr"
      printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' "$1" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.pem"
    }
    issue scheduler
    issue worker1
    openssl rand -hex 32 > client-token
    printf 'client = "%s"\n' "$(tr -d '\n' < client-token | sha256sum | cut -d' ' -f1)" > tokens.toml
  '';
  worker = { name, token ? null, certificate ? true }: { ... }: {
    imports = [ module ];
    services.buildbarn.worker = {
      enable = true;
      package = packages.bb-worker;
      schedulerEndpoint = "grpcs://scheduler:8983";
      storageEndpoint = "grpcs://scheduler:8980";
      credentials = {
        ca = "${credentials}/ca.pem";
        token = token;
      } // pkgs.lib.optionalAttrs certificate {
        certificate = "${credentials}/${name}.pem";
        privateKey = "${credentials}/${name}-key.pem";
      };
      settings.concurrency = 2;
    };
    services.buildbarn.runner.package = packages.bb-runner;
    virtualisation.memorySize = 1024;
  };
in
pkgs.testers.runNixOSTest {
  name = "buildbarn-secure-farm";
  nodes = {
    scheduler = { ... }: {
      imports = [ module ];
      services.buildbarn.scheduler = {
        enable = true;
        package = packages.bb-scheduler;
        openFirewall = true;
        credentials = {
          certificate = "${credentials}/scheduler.pem";
          privateKey = "${credentials}/scheduler-key.pem";
          clientCa = "${credentials}/ca.pem";
          tokensFile = "${credentials}/tokens.toml";
        };
        settings.authentication = {
          listeners.worker = [ "certificate" ];
          policy = [
            { identities = [ "worker1" ]; permissions = [ "worker" ]; }
            { identities = [ "client" ]; permissions = [ "execute" "read" "write-cas" ]; }
          ];
        };
      };
      environment.systemPackages = [ pkgs.curl pkgs.jq ];
    };
    worker1 = worker { name = "worker1"; };
    impostor = worker { name = "impostor"; token = "${credentials}/client-token"; certificate = false; };
    client = { ... }: {
      environment.systemPackages = [ packages.bb ];
    };
  };

  testScript = ''
    status = "curl -sf --cacert ${credentials}/ca.pem -H \"Authorization: Bearer $(cat ${credentials}/client-token)\" https://scheduler:7982/api/status"
    start_all()
    scheduler.wait_for_unit("bb-scheduler.service")
    scheduler.wait_for_open_port(8980)
    worker1.wait_for_unit("bb-worker.service")
    scheduler.wait_until_succeeds(f"{status} | jq -e '[.workers[].labels.host] | unique == [\"worker1\"]'")
    bb = "--endpoint grpcs://scheduler:8980 --tls-ca ${credentials}/ca.pem --env PATH=/run/current-system/sw/bin"

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
        assert hosts == '["worker1"]', hosts
  '';
}

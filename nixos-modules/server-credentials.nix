# What bb-scheduler and bb-storage share about their credentials: the
# options, the settings that point the program at systemd's copies, and
# the assertions (TLS files in pairs; no network without authentication).
{ lib }:
let
  credentials = import ./credentials.nix { inherit lib; };
  inherit (lib) mkIf;
in
{
  options = credentials.options {
    certificate = "The TLS certificate chain (PEM) of its listeners, HTTP included.";
    privateKey = "The TLS certificate's private key (PEM).";
    clientCa = "The CA (PEM) client certificates must chain to (mutual TLS).";
    tokensFile = "Static bearer tokens: a TOML file of name = \"<hex SHA-256 of the token>\".";
    jwksFile = "The JWKS file whose keys verify JWT bearer tokens (settings.authentication.jwt.audience must be set too).";
    bucketCredentials = ''
      The access keys of the object_storage stores in settings (an AWS
      shared credentials file: [default] with aws_access_key_id and
      aws_secret_access_key), for those that name no credentials_file of
      their own; the program finds it through AWS_SHARED_CREDENTIALS_FILE.
    '';
  };

  inherit (credentials) loadCredential;

  # The settings naming the copies of `files` in `unit`'s credentials.
  settings = unit: files:
    let path = credentials.path unit;
    in {
      tls = mkIf (files.certificate != null) {
        certificate = path "certificate";
        private_key = path "privateKey";
      };
      authentication = {
        client_ca = mkIf (files.clientCa != null) (path "clientCa");
        tokens_file = mkIf (files.tokensFile != null) (path "tokensFile");
        jwt = mkIf (files.jwksFile != null) { jwks_file = path "jwksFile"; };
      };
    };

  # The service's environment: where the bucket credentials are, if set.
  environment = unit: files: lib.optionalAttrs (files.bucketCredentials != null) {
    AWS_SHARED_CREDENTIALS_FILE = credentials.path unit "bucketCredentials";
  };

  # `role`'s assertions, given its configuration.
  assertions = role: cfg: [
    {
      assertion = import ./authentication.nix { inherit lib; } cfg.settings;
      message = ''
        services.buildbarn.${role} serves its ports to the network without
        authentication: anyone reaching them could use the farm. Set
        services.buildbarn.${role}.credentials (clientCa, tokensFile or
        jwksFile) and a policy in settings.authentication, or, on a network
        nobody else is on, settings.authentication.anonymous_on_network = true.
      '';
    }
    {
      assertion = (cfg.credentials.certificate == null) == (cfg.credentials.privateKey == null);
      message = "services.buildbarn.${role}.credentials: certificate and privateKey go together.";
    }
  ];
}

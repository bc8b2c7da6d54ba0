# Checks that flake.lock pins every input flake.nix declares, and only those,
# each to a fixed GitHub revision with a content hash, with `follows` as
# declared. Run: nix-instantiate --eval --strict checks/flake-lock.nix
let
  flake = import ../flake.nix;
  lock = builtins.fromJSON (builtins.readFile ../flake.lock);
  inherit (builtins) all attrNames match getAttr hasAttr;

  root = lock.nodes.${lock.root};
  declared = attrNames flake.inputs;

  # "github:owner/repo[/ref]" as the lock's `original` spells it.
  original = url:
    let m = match "github:([^/]+)/([^/]+)(/(.+))?" url;
    in { type = "github"; owner = builtins.elemAt m 0; repo = builtins.elemAt m 1; }
      // (if builtins.elemAt m 3 == null then { } else { ref = builtins.elemAt m 3; });

  pinned = name:
    let
      input = getAttr name flake.inputs;
      node = lock.nodes.${root.inputs.${name}};
      follows = input.inputs or { };
      check = what: ok: if ok then true else throw "flake.lock: ${name}: ${what}";
    in
    check "original is not ${input.url}" (node.original == original input.url)
    && check "rev is not a full commit" (match "[0-9a-f]{40}" node.locked.rev != null)
    && check "narHash is not a SHA-256 SRI hash" (match "sha256-[A-Za-z0-9+/]{43}=" node.locked.narHash != null)
    && check "lastModified is missing" (builtins.isInt node.locked.lastModified)
    && check "locked names another repository"
      (node.locked.owner == node.original.owner && node.locked.repo == node.original.repo)
    && all
      (dep: check "${dep} does not follow ${follows.${dep}.follows}"
        (node.inputs.${dep} == [ follows.${dep}.follows ]))
      (attrNames follows);
in
assert lock.version == 7;
assert attrNames root.inputs == declared
  || throw "flake.lock pins ${toString (attrNames root.inputs)}, flake.nix declares ${toString declared}";
all pinned declared && all (name: hasAttr name lock.nodes) (builtins.attrValues root.inputs)

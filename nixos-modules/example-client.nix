# The example farm's client host: the `bb` CLI (given its package), for
# `bb exec` and `bb status` against the scheduler.
bb: {
  networking.hostName = "client";
  environment.systemPackages = [ bb ];
}

# The programs of this checkout on a test host (the test's pkgs take no
# overlay), and the memory a host of the farm needs.
packages: {
  services.buildbarn.scheduler.package = packages.bb-scheduler;
  services.buildbarn.storage.package = packages.bb-storage;
  services.buildbarn.worker.package = packages.bb-worker;
  services.buildbarn.runner.package = packages.bb-runner;
  virtualisation.memorySize = 1024;
}

"""The harness the tests, the benchmark and the soak share: the service's processes as
subprocesses, databases and vhosts of a run's own on the shared servers, private servers to
break, and what to check afterwards. It never imports the tests, nor pytest."""

"""``make soak``: the shop (examples/shop) under steady open-loop load for minutes while its
control plane is killed, its config changes every 100 ms, replicas are drained, sidecars are
killed and (with ``--pods``) links get delay and loss; then a table of what every request met,
and of every process's memory and open files at start and end. A measurement, not a test:
docs/soak.md says how to read it."""

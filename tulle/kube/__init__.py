"""Kubernetes: the only package that imports a Kubernetes client (lightkube).

Watches that list, then follow changes from the list's resourceVersion (with bookmarks), resume
after a cut, re-list on 410 Gone and back off on errors (``watch``); the API server connection
(``client``); the translation of Services, EndpointSlices, Pods, Nodes and Namespaces to the
registry's own types (``mapping``), so that nothing above this package knows a Kubernetes field
name; and the registry that runs the watches and hands the control plane one update per burst
of changes (``registry``)."""

"""Tests of tulle.kube and the commands that talk to Kubernetes, against KMock."""

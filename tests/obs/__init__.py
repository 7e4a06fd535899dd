"""Tests of the access log and the metrics, in-process."""

"""Tests of tulle.inject and tulle inject."""

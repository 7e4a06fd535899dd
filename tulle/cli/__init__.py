"""The ``tulle`` command line: one module per command; each parses arguments and calls the parts.

No command prints a Python traceback for a user's mistake: errors are one clear line."""

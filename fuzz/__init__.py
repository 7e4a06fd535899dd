"""Coverage-guided fuzz targets (atheris, libFuzzer) for the parsers and the translator.

One module per target, each runnable as ``python -m fuzz.<target> [libFuzzer args]``:
``http1_codec``, ``http1_front``, ``h2_front``, ``h2_frames``, ``config_loader``,
``translator``. ``python -m fuzz`` runs them all for a set time and prints the executions
per target (``make fuzz``). What each checks, and how to replay a crash: docs/fuzzing.md.
The harnesses' shared parts live in :mod:`fuzz.support`."""

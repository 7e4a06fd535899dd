"""What the fuzz targets share: the atheris entry point (:mod:`.runner`), drawing choices from
fuzz input (:mod:`.draw`), the fake transport and engine the front ends are driven with, and
the checks of their output. Nothing here imports atheris at import time, so the regression
tests feed saved inputs through the same code without a fuzzer."""

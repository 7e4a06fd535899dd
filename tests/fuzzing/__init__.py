"""The fuzz targets in the test suite: a short run of each, and the inputs they found."""

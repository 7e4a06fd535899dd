"""h2's connection with a bound that suits a proxy's long-lived connections. Kept apart from
:mod:`tulle.codec.http2`, which the compiled build compiles: a compiled class cannot subclass
h2's interpreted one."""

from __future__ import annotations

import h2.connection


class BoundedH2Connection(h2.connection.H2Connection):
    """h2's connection keeping a record of at most 256 closed streams, not 65,536: each
    record is 110-160 bytes, so a long-lived connection that carried 100,000 gRPC calls held
    about 10 MB for good (found by the soak). A frame for a stream closed longer ago is
    refused as for any closed stream (STREAM_CLOSED)."""

    MAX_CLOSED_STREAMS = 256

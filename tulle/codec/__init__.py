"""Sans-IO codecs: bytes in, events out (and events in, bytes out), no asyncio. HTTP/1.1 on
httptools with the mesh's strictness rules (anything ambiguous is a 400, never forwarded)."""

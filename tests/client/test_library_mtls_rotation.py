"""Library mode terminates mTLS (issue 17 §2), on the mesh of tests/client/library_mesh.py: new
connections get the renewed certificate (20 s certificates) without a restart."""

from __future__ import annotations

import pytest

from tests.client.library_mesh import (
    LEDGER,
    PAYMENT,
    Mesh,
    credentials,
    mtls_get,
    server_certificate,
    spiffe_of,
)
from tests.e2e.conftest import (
    wait_until,
)

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.xdist_group("library-mtls"),  # one worker for all: one mesh (conftest.py)
]


def test_new_connections_get_the_renewed_certificate_without_a_restart(mesh: Mesh) -> None:
    ports = {"payment": mesh.payment.port, "ledger": mesh.ledger.port}
    first = {name: server_certificate(port, credentials(mesh, "frontend"))
             for name, port in ports.items()}  # fmt: skip
    assert spiffe_of(first["payment"]) == [PAYMENT]
    assert spiffe_of(first["ledger"]) == [LEDGER]

    def renewed(name: str) -> bool:
        now = server_certificate(ports[name], credentials(mesh, "frontend"))
        return now.serial_number != first[name].serial_number

    for name in ports:
        wait_until(lambda name=name: renewed(name), timeout=60, interval=0.5)
    assert mesh.payment.proc is not None
    assert mesh.payment.proc.poll() is None  # the same process: no restart
    # The renewed certificate serves requests as the first did.
    answer = mtls_get(mesh.payment.port, "/pay", credentials(mesh, "frontend"))
    assert answer.status_code == 200

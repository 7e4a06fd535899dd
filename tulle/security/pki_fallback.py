"""The workload's X.509 work done with the ``cryptography`` package: used only where
:mod:`tulle.security.libcrypto` cannot load (no OpenSSL 3 libcrypto beside Python's ``ssl``), at
the price of ``cryptography``'s RSS (about 12 MB). Same operations, same results."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tulle.security.certfacts import CertificateFacts, KeyFacts

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
_CURVES = {"secp256r1": "prime256v1"}  # cryptography's curve names as OpenSSL's


class CryptographyPki:
    """:class:`tulle.security.libcrypto.Libcrypto`'s operations, with ``cryptography``."""

    path = "cryptography"

    def new_ec_key_pem(self) -> bytes:
        """A new EC P-256 private key, as unencrypted PKCS #8 PEM."""
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def key_facts(self, pem: bytes) -> KeyFacts:
        """The public half and the kind of the private key in ``pem``."""
        key = serialization.load_pem_private_key(pem, password=None)
        public = key.public_key().public_bytes(*_SPKI)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            name = key.curve.name
            return KeyFacts(public, "EC", key.curve.key_size, _CURVES.get(name, name))
        if isinstance(key, rsa.RSAPrivateKey):
            return KeyFacts(public, "RSA", key.key_size, None)
        return KeyFacts(public, type(key).__name__, 0, None)

    def csr_pem(self, key_pem: bytes, uri: str | None) -> bytes:
        """A PEM CSR signed with SHA-256 by ``key_pem``'s key: empty subject and, when ``uri``
        is given, one critical SAN extension holding that URI."""
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"a {type(key).__name__} cannot sign a CSR here")
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
        if uri is not None:
            names = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
            builder = builder.add_extension(names, critical=True)
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def certificate_facts(self, der: bytes) -> CertificateFacts:
        """The facts of the DER certificate ``der``."""
        certificate = x509.load_der_x509_certificate(der)
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            uris: tuple[str, ...] | None = tuple(
                san.value.get_values_for_type(x509.UniformResourceIdentifier)
            )
        except x509.ExtensionNotFound:
            uris = None
        except (x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as error:
            raise ValueError(f"the certificate's extensions cannot be read: {error}") from None
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
            is_ca = constraints.value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        return CertificateFacts(
            der,
            certificate.not_valid_before_utc,
            certificate.not_valid_after_utc,
            certificate.serial_number,
            uris,
            is_ca,
            certificate.public_key().public_bytes(*_SPKI),
        )

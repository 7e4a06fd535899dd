"""The workload's X.509 work done by the OpenSSL libcrypto that Python's ``ssl`` module has already
loaded, through ``ctypes``: a new EC P-256 key, a CSR signed with it, and the facts of a
certificate or a key (:mod:`tulle.security.certfacts`).

Why: the ``cryptography`` package carries its own OpenSSL, and loading it costs a workload about
12 MB of RSS, while the libcrypto that ``ssl`` uses is mapped anyway. The library is the one
``/proc/self/maps`` shows after ``import ssl`` (else ``ctypes.util.find_library("crypto")``); it
must be OpenSSL 3 and have every symbol below, or :func:`load` says why not (the caller then uses
:mod:`tulle.security.pki_fallback`). Every call's result is checked: a failure raises
:class:`LibcryptoError` naming the call and OpenSSL's reasons. Every object made is freed.
"""

from __future__ import annotations

import ctypes
import os
import ssl
import threading
from ctypes import byref, c_char_p, c_int, c_long, c_size_t, c_uint32, c_ulong, c_void_p
from datetime import UTC, datetime
from typing import Any

from tulle.security.certfacts import CertificateFacts, KeyFacts, der_integer

MIN_VERSION = 0x30000000  # OpenSSL 3.0.0
NID_SUBJECT_ALT_NAME = 85
GEN_URI = 6
EXFLAG_CA = 0x10
BIO_CTRL_INFO = 3
_ALGORITHMS = {408: "EC", 6: "RSA"}  # EVP_PKEY_EC, EVP_PKEY_RSA
_REASON_BYTES = 256

P = c_void_p  # every OpenSSL object is opaque here
# name: (result type, argument types)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "OpenSSL_version_num": (c_ulong, []),
    "ERR_get_error": (c_ulong, []),
    "ERR_clear_error": (None, []),
    "ERR_error_string_n": (None, [c_ulong, c_char_p, c_size_t]),
    "BIO_s_mem": (P, []),
    "BIO_new": (P, [P]),
    "BIO_new_mem_buf": (P, [c_char_p, c_int]),
    "BIO_ctrl": (c_long, [P, c_int, c_long, P]),
    "BIO_free": (c_int, [P]),
    "EVP_PKEY_CTX_new_from_name": (P, [P, c_char_p, c_char_p]),
    "EVP_PKEY_keygen_init": (c_int, [P]),
    "EVP_PKEY_CTX_set_group_name": (c_int, [P, c_char_p]),
    "EVP_PKEY_generate": (c_int, [P, P]),
    "EVP_PKEY_CTX_free": (None, [P]),
    "EVP_PKEY_free": (None, [P]),
    "EVP_PKEY_get_base_id": (c_int, [P]),
    "EVP_PKEY_get_bits": (c_int, [P]),
    "EVP_PKEY_get_group_name": (c_int, [P, c_char_p, c_size_t, P]),
    "OBJ_nid2sn": (c_char_p, [c_int]),
    "PEM_write_bio_PrivateKey": (c_int, [P, P, P, P, c_int, P, P]),
    "PEM_read_bio_PrivateKey": (P, [P, P, P, c_char_p]),
    "PEM_write_bio_X509_REQ": (c_int, [P, P]),
    "i2d_PUBKEY": (c_int, [P, P]),
    "EVP_sha256": (P, []),
    "X509_REQ_new": (P, []),
    "X509_REQ_free": (None, [P]),
    "X509_REQ_set_version": (c_int, [P, c_long]),
    "X509_REQ_set_pubkey": (c_int, [P, P]),
    "X509_REQ_add_extensions": (c_int, [P, P]),
    "X509_REQ_sign": (c_int, [P, P, P]),
    "OPENSSL_sk_new_null": (P, []),
    "OPENSSL_sk_push": (c_int, [P, P]),
    "OPENSSL_sk_num": (c_int, [P]),
    "OPENSSL_sk_value": (P, [P, c_int]),
    "OPENSSL_sk_free": (None, [P]),
    "GENERAL_NAME_new": (P, []),
    "GENERAL_NAME_free": (None, [P]),
    "GENERAL_NAME_set0_value": (None, [P, c_int, P]),
    "GENERAL_NAME_get0_value": (P, [P, P]),
    "GENERAL_NAMES_free": (None, [P]),
    "ASN1_IA5STRING_new": (P, []),
    "ASN1_STRING_free": (None, [P]),
    "ASN1_STRING_set": (c_int, [P, c_char_p, c_int]),
    "ASN1_STRING_get0_data": (P, [P]),
    "ASN1_STRING_length": (c_int, [P]),
    "ASN1_TIME_to_tm": (c_int, [P, P]),
    "i2d_ASN1_INTEGER": (c_int, [P, P]),
    "X509V3_EXT_i2d": (P, [c_int, c_int, P]),
    "X509_EXTENSION_free": (None, [P]),
    "d2i_X509": (P, [P, P, c_long]),
    "X509_free": (None, [P]),
    "X509_get0_notBefore": (P, [P]),
    "X509_get0_notAfter": (P, [P]),
    "X509_get0_serialNumber": (P, [P]),
    "X509_get_ext_d2i": (P, [P, c_int, P, P]),
    "X509_get_extension_flags": (c_uint32, [P]),
    "X509_get_X509_PUBKEY": (P, [P]),
    "i2d_X509_PUBKEY": (c_int, [P, P]),
}


class LibcryptoError(ValueError):
    """A libcrypto call failed: the message names the call and gives OpenSSL's reasons."""


class _Tm(ctypes.Structure):
    """C's ``struct tm`` (glibc's layout; ASN1_TIME_to_tm fills the first six fields)."""

    _fields_ = [
        *((name, c_int) for name in ("sec", "min", "hour", "mday", "mon", "year")),
        *((name, c_int) for name in ("wday", "yday", "isdst")),
        ("gmtoff", c_long),
        ("zone", c_char_p),
    ]


def library_path() -> str | None:
    """The libcrypto Python's ``ssl`` module loaded (from this process's memory map), else the
    one the dynamic linker would find, else None."""
    assert ssl.OPENSSL_VERSION  # ssl (and so its libcrypto) is loaded
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and os.path.basename(fields[5]).startswith("libcrypto.so"):
                    return fields[5].strip()
    except OSError:
        pass
    import ctypes.util  # noqa: PLC0415 - only then: it costs ~0.5 MB of RSS

    return ctypes.util.find_library("crypto")


class Libcrypto:
    """The bound library; its methods are the operations a workload needs."""

    def __init__(self, path: str) -> None:
        """Bind ``path``; OSError/AttributeError/LibcryptoError when it cannot be used."""
        self.path = path
        library = ctypes.CDLL(path)  # the loaded copy: dlopen returns the same handle
        for name, (result, arguments) in _SIGNATURES.items():
            function = getattr(library, name)  # AttributeError names a missing symbol
            function.restype = result
            function.argtypes = arguments
        self._c = library
        version = int(library.OpenSSL_version_num())
        if version < MIN_VERSION:
            raise LibcryptoError(f"{path} is OpenSSL {version:#x}; OpenSSL 3 is needed")

    # Checked calls -------------------------------------------------------------------------

    def _failure(self, call: str) -> LibcryptoError:
        """The error of a failed ``call``, with every reason OpenSSL queued (the queue is
        emptied)."""
        reasons = []
        while code := int(self._c.ERR_get_error()):
            text = ctypes.create_string_buffer(_REASON_BYTES)
            self._c.ERR_error_string_n(code, text, _REASON_BYTES)
            reasons.append(text.value.decode(errors="replace"))
        detail = f": {'; '.join(reasons)}" if reasons else ""
        return LibcryptoError(f"libcrypto {call} failed{detail}")

    def _new(self, call: str, *arguments: object) -> int:
        """``call``'s pointer result; LibcryptoError when it is NULL."""
        result = getattr(self._c, call)(*arguments)
        if not result:
            raise self._failure(call)
        return int(result)

    def _ok(self, call: str, *arguments: object) -> int:
        """``call``'s int result; LibcryptoError unless it is positive (OpenSSL's success)."""
        result = int(getattr(self._c, call)(*arguments))
        if result <= 0:
            raise self._failure(call)
        return result

    def _i2d(self, call: str, thing: int) -> bytes:
        """The DER ``call`` (an ``i2d_*`` function) encodes ``thing`` as."""
        size = self._ok(call, thing, None)
        buffer = ctypes.create_string_buffer(size)
        cursor = c_void_p(ctypes.addressof(buffer))
        written = self._ok(call, thing, byref(cursor))
        return buffer.raw[:written]

    def _write_pem(self, call: str, thing: int, *rest: object) -> bytes:
        """What ``call`` (a ``PEM_write_bio_*`` function) writes of ``thing`` into a memory BIO."""
        bio = self._new("BIO_new", self._new("BIO_s_mem"))
        try:
            self._ok(call, bio, thing, *rest)
            data = c_void_p()
            size = int(self._c.BIO_ctrl(bio, BIO_CTRL_INFO, 0, byref(data)))
            if size <= 0 or not data.value:
                raise self._failure(f"{call} (into a memory BIO)")
            return ctypes.string_at(data.value, size)
        finally:
            self._c.BIO_free(bio)

    # Keys ----------------------------------------------------------------------------------

    def new_ec_key_pem(self) -> bytes:
        """A new EC P-256 private key, as unencrypted PKCS #8 PEM."""
        self._c.ERR_clear_error()
        context = self._new("EVP_PKEY_CTX_new_from_name", None, b"EC", None)
        key = c_void_p()
        try:
            self._ok("EVP_PKEY_keygen_init", context)
            self._ok("EVP_PKEY_CTX_set_group_name", context, b"P-256")
            self._ok("EVP_PKEY_generate", context, byref(key))
            if not key.value:
                raise self._failure("EVP_PKEY_generate (no key)")
            return self._write_pem("PEM_write_bio_PrivateKey", key.value, None, None, 0, None, None)
        finally:
            self._c.EVP_PKEY_CTX_free(context)
            self._c.EVP_PKEY_free(key)  # NULL when none was made: a no-op

    def _read_key(self, pem: bytes) -> int:
        """The EVP_PKEY of unencrypted PEM ``pem`` (the caller frees it)."""
        if b"ENCRYPTED" in pem:
            raise LibcryptoError("the private key is encrypted; an unencrypted one is needed")
        bio = self._new("BIO_new_mem_buf", pem, len(pem))
        try:
            # An empty passphrase, never OpenSSL's default: that one prompts on the terminal.
            return self._new("PEM_read_bio_PrivateKey", bio, None, None, b"")
        finally:
            self._c.BIO_free(bio)

    def key_facts(self, pem: bytes) -> KeyFacts:
        """The public half and the kind of the private key in ``pem``."""
        self._c.ERR_clear_error()
        key = self._read_key(pem)
        try:
            base = int(self._c.EVP_PKEY_get_base_id(key))
            algorithm = _ALGORITHMS.get(base) or self._nid_name(base)
            group = None
            if algorithm == "EC":
                text = ctypes.create_string_buffer(80)
                self._ok("EVP_PKEY_get_group_name", key, text, len(text), None)
                group = text.value.decode()
            return KeyFacts(
                self._i2d("i2d_PUBKEY", key),
                algorithm,
                int(self._c.EVP_PKEY_get_bits(key)),
                group,
            )
        finally:
            self._c.EVP_PKEY_free(key)

    def _nid_name(self, nid: int) -> str:
        """OpenSSL's short name of ``nid`` (the number when it has none)."""
        name = self._c.OBJ_nid2sn(nid)
        return name.decode() if isinstance(name, bytes) else str(nid)

    # CSRs ----------------------------------------------------------------------------------

    def csr_pem(self, key_pem: bytes, uri: str | None) -> bytes:
        """A PEM CSR signed (ECDSA or RSA with SHA-256) by the key in ``key_pem``: empty subject
        and, when ``uri`` is given, one critical SAN extension holding that URI (as
        :func:`tulle.security.keys.make_csr` makes it)."""
        self._c.ERR_clear_error()
        key = self._read_key(key_pem)
        try:
            request = self._new("X509_REQ_new")
            try:
                self._ok("X509_REQ_set_version", request, 0)
                self._ok("X509_REQ_set_pubkey", request, key)
                if uri is not None:
                    self._add_uri_san(request, uri)
                self._ok("X509_REQ_sign", request, key, self._new("EVP_sha256"))
                return self._write_pem("PEM_write_bio_X509_REQ", request)
            finally:
                self._c.X509_REQ_free(request)
        finally:
            self._c.EVP_PKEY_free(key)

    def _add_uri_san(self, request: int, uri: str) -> None:
        """Add to ``request`` a critical subjectAltName extension with the one URI ``uri``."""
        value = uri.encode("ascii")
        names = self._new("OPENSSL_sk_new_null")  # GENERAL_NAMES
        try:
            name = self._new("GENERAL_NAME_new")
            if self._c.OPENSSL_sk_push(names, name) <= 0:
                self._c.GENERAL_NAME_free(name)
                raise self._failure("OPENSSL_sk_push (GENERAL_NAMES)")
            text = self._new("ASN1_IA5STRING_new")
            try:
                self._ok("ASN1_STRING_set", text, value, len(value))
            except LibcryptoError:
                self._c.ASN1_STRING_free(text)
                raise
            self._c.GENERAL_NAME_set0_value(name, GEN_URI, text)  # name owns text now
            extension = self._new("X509V3_EXT_i2d", NID_SUBJECT_ALT_NAME, 1, names)
        finally:
            self._c.GENERAL_NAMES_free(names)  # the stack, its names and their strings
        try:
            extensions = self._new("OPENSSL_sk_new_null")  # STACK_OF(X509_EXTENSION)
            try:
                self._ok("OPENSSL_sk_push", extensions, extension)
                self._ok("X509_REQ_add_extensions", request, extensions)  # copies them
            finally:
                self._c.OPENSSL_sk_free(extensions)
        finally:
            self._c.X509_EXTENSION_free(extension)

    # Certificates --------------------------------------------------------------------------

    def certificate_facts(self, der: bytes) -> CertificateFacts:
        """The facts of the DER certificate ``der``; LibcryptoError when it is not one (or has
        bytes after it, or a SAN extension that cannot be read)."""
        self._c.ERR_clear_error()
        buffer = ctypes.create_string_buffer(der, len(der))
        start = ctypes.addressof(buffer)
        cursor = c_void_p(start)
        certificate = self._new("d2i_X509", None, byref(cursor), len(der))
        try:
            if cursor.value != start + len(der):
                raise LibcryptoError(
                    f"d2i_X509 read {(cursor.value or start) - start} of {len(der)} bytes: "
                    "bytes follow the certificate"
                )
            serial = self._new("X509_get0_serialNumber", certificate)
            flags = int(self._c.X509_get_extension_flags(certificate))
            return CertificateFacts(
                der,
                self._time("X509_get0_notBefore", certificate),
                self._time("X509_get0_notAfter", certificate),
                der_integer(self._i2d("i2d_ASN1_INTEGER", serial)),
                self._uris(certificate),
                bool(flags & EXFLAG_CA),
                self._i2d("i2d_X509_PUBKEY", self._new("X509_get_X509_PUBKEY", certificate)),
            )
        finally:
            self._c.X509_free(certificate)

    def _time(self, call: str, certificate: int) -> datetime:
        """The time ``call`` (X509_get0_notBefore/notAfter) gives, aware, UTC."""
        tm = _Tm()
        self._ok("ASN1_TIME_to_tm", self._new(call, certificate), byref(tm))
        return datetime(tm.year + 1900, tm.mon + 1, tm.mday, tm.hour, tm.min, tm.sec, tzinfo=UTC)

    def _uris(self, certificate: int) -> tuple[str, ...] | None:
        """The URI SANs of ``certificate``, in order; None when it has no SAN extension."""
        found = c_int()
        names = self._c.X509_get_ext_d2i(certificate, NID_SUBJECT_ALT_NAME, byref(found), None)
        if not names:
            if found.value == -1:
                return None
            if found.value == -2:
                raise LibcryptoError("the certificate has more than one SAN extension")
            raise self._failure("X509_get_ext_d2i (subjectAltName)")
        try:
            uris = []
            kind = c_int()
            for index in range(int(self._c.OPENSSL_sk_num(names))):
                name = self._new("OPENSSL_sk_value", names, index)
                value = self._c.GENERAL_NAME_get0_value(name, byref(kind))
                if kind.value == GEN_URI and value:
                    size = int(self._c.ASN1_STRING_length(value))
                    data = self._new("ASN1_STRING_get0_data", value) if size else 0
                    raw = ctypes.string_at(data, size) if size else b""
                    try:
                        uris.append(raw.decode("ascii"))
                    except UnicodeDecodeError:
                        raise LibcryptoError(f"a URI SAN is not ASCII: {raw!r}") from None
            return tuple(uris)
        finally:
            self._c.GENERAL_NAMES_free(names)


_lock = threading.Lock()
_loaded: list[Libcrypto | str] = []  # the one result of load(): the library, or why not


def load() -> Libcrypto | str:
    """The bound libcrypto, or why it cannot be used (a sentence); decided once per process."""
    with _lock:
        if not _loaded:
            path = library_path()
            try:
                if path is None:
                    raise OSError("no libcrypto is loaded or found")
                _loaded.append(Libcrypto(path))
            except (OSError, AttributeError, LibcryptoError) as error:
                _loaded.append(f"libcrypto ({path}) cannot be used: {error}")
        return _loaded[0]

"""TLS and mTLS for the sidecar's gRPC listeners (ext_proc/ext_authz, admin), reloaded on rotation.

A listener with ``TlsFiles`` serves only TLS; with ``client_ca`` it also demands a client
certificate signed by that CA (mTLS). The files are read again when they change: gRPC asks
``CertificateReloader.fetch`` before each new connection's handshake (grpc's dynamic server
credentials), which compares the files' stat to the last loaded pair and, when they differ,
loads the new pair once it checks out. cert-manager and a kubelet-mounted Secret rotate by
swapping a symlink, so a half-written pair is rare; when the key does not match the
certificate (or a file does not parse) the old pair keeps serving, and one warning is logged
per change. Connections already open keep the certificate they were set up with.

The client side (``channel_credentials``) is for the admin CLI.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass

import grpc

from .errors import TlsError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of one TLS listener: its certificate chain and key, and the CA of its clients."""

    cert: str
    key: str
    client_ca: str | None = None  # set: mTLS, clients must show a certificate this CA signed

    @classmethod
    def of(
        cls, cert: str | None, key: str | None, client_ca: str | None, flag: str
    ) -> TlsFiles | None:
        """From the three flags of one listener (``flag``: their prefix, for the message)."""
        if not cert and not key:
            if client_ca:
                raise TlsError(f"{flag}-client-ca needs {flag}-cert and {flag}-key")
            return None
        if not (cert and key):
            raise TlsError(f"{flag}-cert and {flag}-key go together")
        return cls(cert, key, client_ca or None)


def _signature(files: TlsFiles) -> tuple[tuple[int, int, int], ...]:
    # stat follows symlinks: a Secret volume's ..data swap changes the inode or mtime.
    paths = (files.cert, files.key, *((files.client_ca,) if files.client_ca else ()))
    out = []
    for path in paths:
        st = os.stat(path)
        out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _read(files: TlsFiles) -> tuple[bytes, bytes, bytes | None]:
    def read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    return read(files.cert), read(files.key), read(files.client_ca) if files.client_ca else None


def _no_password() -> bytes:
    # An encrypted key would otherwise make OpenSSL prompt on the terminal; gRPC cannot use
    # one anyway.
    raise TlsError("the private key is encrypted; give an unencrypted PEM key")


def _load(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    """Read and check the pair (the key matches the certificate, the CA parses)."""
    try:
        cert, key, ca = _read(files)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files.cert, files.key, password=_no_password)
        if files.client_ca:
            context.load_verify_locations(files.client_ca)
        # What was checked is what is served: a rotation between the two reads is caught here
        # (and retried at the next handshake, the files' stat having changed again).
        if _read(files) != (cert, key, ca):
            raise TlsError("the files changed while being read")
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"{files.cert}, {files.key}: {exc}") from exc
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


class CertificateReloader:
    """gRPC's certificate-configuration fetcher: a new configuration when the files changed."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        try:
            self._seen = _signature(files)
        except OSError as exc:
            raise TlsError(f"{exc.filename}: {exc.strerror}") from exc
        self.initial = _load(files)  # TlsError at start: nothing to serve with
        self.reloads = 0

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """None: keep the current pair (unchanged, or the change does not load). Never raises."""
        try:
            with self._lock:
                signature = _signature(self.files)
                if signature == self._seen:
                    return None
                self._seen = signature  # a broken pair is reported once, retried when it changes
                config = _load(self.files)
                self.reloads += 1
        except (OSError, TlsError) as exc:
            log.warning("TLS files changed but do not load; still serving the old pair: %s", exc)
            return None
        log.info("TLS certificate reloaded from %s", self.files.cert)
        return config


def server_credentials(files: TlsFiles) -> tuple[grpc.ServerCredentials, CertificateReloader]:
    """Credentials for ``add_secure_port`` that follow rotations of ``files``."""
    reloader = CertificateReloader(files)
    credentials = grpc.dynamic_ssl_server_credentials(
        reloader.initial,
        reloader.fetch,
        require_client_authentication=files.client_ca is not None,
    )
    return credentials, reloader


def channel_credentials(
    ca: str | None, cert: str | None = None, key: str | None = None
) -> grpc.ChannelCredentials:
    """A client's TLS: ``ca`` to check the server (None: the system roots), cert/key for mTLS."""
    if bool(cert) != bool(key):
        raise TlsError("a client certificate and its key go together")

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise TlsError(f"{path}: {exc.strerror}") from exc

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert)
    )


def _ssl_context(files: TlsFiles, alpn: tuple[str, ...]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key, password=_no_password)
    if files.client_ca:
        context.load_verify_locations(files.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(list(alpn))
    return context


def server_ssl_context(
    files: TlsFiles, *, alpn: tuple[str, ...]
) -> tuple[ssl.SSLContext, CertificateReloader]:
    """An ``ssl.SSLContext`` for an asyncio server (the h2 transport) that follows rotations
    of ``files`` as ``server_credentials`` does: at each handshake (the ClientHello callback)
    the files' stat is compared, and a changed pair that loads serves the new connections."""
    reloader = CertificateReloader(files)  # TlsError at start: nothing to serve with
    base = _ssl_context(files, alpn)
    current = [base]

    def on_hello(conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object) -> None:
        if reloader.fetch() is not None:  # changed, and checked out
            try:
                current[0] = _ssl_context(files, alpn)
            except (OSError, ssl.SSLError) as exc:
                log.warning(
                    "TLS files changed but do not load; still serving the old pair: %s", exc
                )
        if current[0] is not base:
            conn.context = current[0]

    base.sni_callback = on_hello
    return base, reloader

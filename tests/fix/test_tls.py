"""FIX over TLS: runfix's tunnel verifies the LP's certificate and host name against the session's
CA file. Certificates are generated at test time."""

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fix.selectors import fix_session_state
from tests.fakes.fix_peer import FixPeer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_peer(tmp_path):
    cert, key = self_signed(tmp_path, "lp")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    peer = FixPeer(sender="PEER", target="LIVERMORE", tls=context)
    yield peer, cert
    peer.close()


def test_it_logs_on_over_tls_to_a_peer_with_a_trusted_certificate(tls_peer, make_session, run_engine):
    peer, cert = tls_peer
    session = make_session(peer.port, role="trading", venue=None, tls=True, tls_ca_file=str(cert))
    run_engine()
    logon = peer.expect("A", timeout=10)
    assert logon["553"] == "livermore"
    wait_until(lambda: (fix_session_state(session=session) or {}).get("logged_on"))


def test_it_refuses_a_peer_whose_certificate_it_cannot_verify(tls_peer, make_session, run_engine, tmp_path):
    peer, _ = tls_peer
    other_ca, _ = self_signed(tmp_path, "someone-else")
    make_session(peer.port, role="trading", venue=None, tls=True, tls_ca_file=str(other_ca), reconnect_s=1)
    run_engine()
    with pytest.raises(AssertionError):
        peer.expect("A", timeout=3)
    assert peer.tls_failures >= 1

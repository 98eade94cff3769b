"""Keys and certificates of the local cluster: a CA, the API server's serving certificate,
the service-account signing key, a static admin token (group system:masters), and for the real
node (devcluster.realnode) the kubelet's serving certificate and the API server's client
certificate towards the kubelet (what `kubectl logs` and `exec` go through)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devcluster.netns import NODE_IP, NODE_NAME

SANS_DNS = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local"]
SANS_IP = ["127.0.0.1", "10.96.0.1", "::1", NODE_IP]


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def write_pki(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    later = now + dt.timedelta(days=365)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gentask-devcluster-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(later)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usage: x509.ObjectIdentifier, dns: Sequence[str] = (), ips: Sequence[str] = (),
             orgs: Sequence[str] = ()) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name(name + [x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                   .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(later)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if dns or ips:
            sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    key, cert = leaf("kube-apiserver", ExtendedKeyUsageOID.SERVER_AUTH, SANS_DNS, SANS_IP)
    kubelet_key, kubelet_cert = leaf(NODE_NAME, ExtendedKeyUsageOID.SERVER_AUTH, [NODE_NAME, "localhost"],
                                     [NODE_IP, "127.0.0.1"])
    client_key, client_cert = leaf("kube-apiserver-kubelet-client", ExtendedKeyUsageOID.CLIENT_AUTH,
                                   orgs=("system:masters",))

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    _write(folder / "ca.crt", ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(folder / "ca.key", _pem_key(ca_key))
    _write(folder / "apiserver.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(folder / "apiserver.key", _pem_key(key))
    _write(folder / "kubelet.crt", kubelet_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(folder / "kubelet.key", _pem_key(kubelet_key))
    _write(folder / "apiserver-kubelet-client.crt", client_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(folder / "apiserver-kubelet-client.key", _pem_key(client_key))
    _write(folder / "sa.key", _pem_key(sa_key))
    _write(folder / "sa.pub", sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    token = secrets.token_urlsafe(32)
    _write(folder / "admin.token", token.encode())
    _write(folder / "tokens.csv", f'{token},admin,admin-uid,"system:masters"\n'.encode())


def write_user(folder: Path, username: str, groups: Sequence[str] = (), days: int = 30) -> tuple[Path, Path]:
    """A client certificate for `username` (CN) in `groups` (O), signed by the cluster's CA: how a real
    user of the local cluster authenticates (RBAC then says what it may do). Written to
    <folder>/users/<username>.crt and .key; returns the two paths."""
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{folder / 'ca.key'} is not the cluster's EC CA key")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
                        + [x509.NameAttribute(NameOID.COMMON_NAME, username)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    users = folder / "users"
    users.mkdir(exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in username)
    crt, pem = users / f"{safe}.crt", users / f"{safe}.key"
    _write(crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(pem, _pem_key(key))
    return crt, pem

"""The secure stack's Kerberos KDC and its throw-away certificate authority
(``metaproxy stack up --secure``).

The KDC is MIT Kerberos (Debian's ``krb5-kdc``, which ``make setup-secure`` installs) serving the
realm :data:`REALM` on loopback from a database under the stack's ``data/kdc/``, created afresh
at every start: ``kdb5_util create -s``, one ``kadmin.local addprinc -randkey`` per principal of
:data:`PRINCIPALS` and ``ktadd`` of each into its keytab under ``conf/keytabs/``. Every process of
the stack reads the stack's own ``conf/krb5.conf`` (``KRB5_CONFIG``; Java:
``-Djava.security.krb5.conf``), never the machine's.

The certificate authority (:func:`make_ca`) is made with ``cryptography`` at the same time: one
server certificate for ``localhost`` and ``127.0.0.1`` that HDFS's HTTPS endpoints, the proxy's
listeners and the gateway serve, and the CA file every client verifies them with.
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaproxy_devstack.common import HOST, StackError

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout

REALM = "METAPROXY.TEST"
#: the host name in every service principal: loopback, spelt as clients spell it
SERVICE_HOST = "localhost"
#: password of the Java keystore and truststore files (the stack's, thrown away with it)
STORE_PASSWORD = "metaproxy-store"


@dataclass(frozen=True)
class Principal:
    """One principal of the realm and the keytab it is written to."""

    name: str
    keytab: str
    #: the longest ticket the KDC issues for it, e.g. "20s"; None: the realm's default
    max_life: str | None = None

    @property
    def full(self) -> str:
        return f"{self.name}@{REALM}"


#: every principal of the stack's realm, by role
PRINCIPALS: dict[str, Principal] = {
    # the Hive Metastore's service principal (and its identity toward HDFS)
    "hive": Principal(f"hive/{SERVICE_HOST}", "hive.keytab"),
    # the NameNode and DataNode, and SPNEGO on their HTTP endpoints
    "hdfs": Principal(f"hdfs/{SERVICE_HOST}", "hdfs.keytab"),
    "http": Principal(f"HTTP/{SERVICE_HOST}", "hdfs.keytab"),
    "trino": Principal("trino", "trino.keytab"),
    # metaproxy's proxy, gateway and migration loop: its own identity toward the HMS and HDFS,
    # and the service principal of the proxy's kerberos listeners
    "metaproxy": Principal(f"metaproxy/{SERVICE_HOST}", "metaproxy.keytab"),
    # the tests' users: one allowed on the kerberos listeners, one that is not, and one whose
    # tickets live for seconds (ticket expiry and renewal)
    "user": Principal("alice", "alice.keytab"),
    "intruder": Principal("mallory", "mallory.keytab"),
    "short": Principal("shortlived", "shortlived.keytab", max_life="15s"),
}


def krb5_conf_path(st: StackLayout) -> Path:
    return st.conf / "krb5.conf"


def keytab(st: StackLayout, role: str) -> Path:
    return st.conf / "keytabs" / PRINCIPALS[role].keytab


def kerberos_env(st: StackLayout) -> dict[str, str]:
    """What every process of the secure stack gets in its environment."""
    return {"KRB5_CONFIG": str(krb5_conf_path(st)), "KRB5RCACHETYPE": "none"}


def java_truststore_opts(st: StackLayout) -> list[str]:
    """The JVM flags that make Java trust the stack's CA (and only it)."""
    files = tls_files(st)
    return [
        f"-Djavax.net.ssl.trustStore={files.truststore}",
        f"-Djavax.net.ssl.trustStorePassword={STORE_PASSWORD}",
        "-Djavax.net.ssl.trustStoreType=PKCS12",
    ]


def java_kerberos_opts(st: StackLayout) -> list[str]:
    """The JVM flags that point Java's Kerberos at the stack's realm."""
    return [
        f"-Djava.security.krb5.conf={krb5_conf_path(st)}",
        "-Djavax.security.auth.useSubjectCredsOnly=false",
        "-Dsun.security.krb5.disableReferrals=true",
    ]


def _krb5_conf(st: StackLayout) -> str:
    port = st.port("kdc")
    return f"""[libdefaults]
    default_realm = {REALM}
    dns_lookup_realm = false
    dns_lookup_kdc = false
    dns_canonicalize_hostname = false
    rdns = false
    ignore_acceptor_hostname = true
    udp_preference_limit = 1
    forwardable = true
    ticket_lifetime = 8h
    renew_lifetime = 1d
    default_tkt_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96
    default_tgs_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96
    permitted_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96
    default_ccache_name = FILE:{st.data / "kdc" / "ccache"}

[realms]
    {REALM} = {{
        kdc = {HOST}:{port}
        admin_server = {HOST}:{port}
    }}

[domain_realm]
    {SERVICE_HOST} = {REALM}
    {HOST} = {REALM}
"""


def _kdc_conf(st: StackLayout) -> str:
    db = st.data / "kdc"
    port = st.port("kdc")
    return f"""[kdcdefaults]
    kdc_ports = {port}
    kdc_tcp_ports = {port}

[realms]
    {REALM} = {{
        database_name = {db / "principal"}
        key_stash_file = {db / "stash"}
        acl_file = {db / "kadm5.acl"}
        max_life = 8h
        max_renewable_life = 1d
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}

[logging]
    kdc = FILE:{st.logs / "kdc-events.log"}
"""


def _tool(name: str) -> str:
    for d in ("/usr/sbin", "/usr/bin"):
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    found = shutil.which(name)
    if not found:
        raise StackError(
            f"{name} is missing: the secure stack needs MIT Kerberos "
            "(Debian's krb5-kdc, krb5-admin-server, krb5-user; `make setup-secure` installs them)"
        )
    return found


def _run(st: StackLayout, argv: list[str], env: dict[str, str]) -> None:
    with open(st.logs / "kdc-setup.log", "ab") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
    if proc.returncode != 0:
        raise StackError(f"{argv[0]} failed (exit {proc.returncode}); see {st.logs / 'kdc-setup.log'}")


def create_realm(st: StackLayout) -> dict[str, str]:
    """A new realm database with every principal, and their keytabs; the KDC's environment."""
    db = st.data / "kdc"
    shutil.rmtree(db, ignore_errors=True)
    db.mkdir(parents=True)
    (db / "kadm5.acl").write_text(f"*/admin@{REALM} *\n")
    krb5_conf_path(st).write_text(_krb5_conf(st))
    kdc_conf = st.conf / "kdc.conf"
    kdc_conf.write_text(_kdc_conf(st))
    env = {**kerberos_env(st), "KRB5_KDC_PROFILE": str(kdc_conf)}
    # the master key only protects the throw-away database; it is stashed for the KDC
    _run(st, [_tool("kdb5_util"), "-r", REALM, "create", "-s", "-P", secrets.token_hex(16)], env)
    keytabs = st.conf / "keytabs"
    shutil.rmtree(keytabs, ignore_errors=True)
    keytabs.mkdir(parents=True)
    kadmin = _tool("kadmin.local")
    queries = []
    for p in PRINCIPALS.values():
        life = f" -maxlife {p.max_life}" if p.max_life else ""
        queries.append(f"addprinc -randkey{life} {p.full}")
        queries.append(f"ktadd -k {keytabs / p.keytab} {p.full}")
    for q in queries:
        _run(st, [kadmin, "-r", REALM, "-q", q], env)
    for f in keytabs.iterdir():
        f.chmod(0o600)
    return env


def kdc_command(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    """The KDC's command and environment, on the realm database already created."""
    return [_tool("krb5kdc"), "-n", "-r", REALM], {
        **kerberos_env(st),
        "KRB5_KDC_PROFILE": str(st.conf / "kdc.conf"),
    }


def prepare_kdc(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    create_realm(st)
    make_ca(st)
    use_stack_kerberos(st)
    return kdc_command(st)


def kdc_ready(st: StackLayout) -> bool:
    """The KDC issues a ticket: ``kinit`` from a keytab into a throw-away cache."""
    cache = st.data / "kdc" / "ready-ccache"
    env = {**os.environ, **kerberos_env(st)}
    proc = subprocess.run(
        [_tool("kinit"), "-k", "-t", str(keytab(st, "user")), "-c", f"FILE:{cache}", PRINCIPALS["user"].full],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    cache.unlink(missing_ok=True)
    return proc.returncode == 0


def kinit(st: StackLayout, role: str, cache: Path) -> None:
    """Get ``role``'s ticket from its keytab into ``cache``."""
    _run(
        st,
        [_tool("kinit"), "-k", "-t", str(keytab(st, role)), "-c", f"FILE:{cache}", PRINCIPALS[role].full],
        kerberos_env(st),
    )


# -- the throw-away certificate authority ----------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    #: the server key and certificate as a PKCS#12 keystore (Hadoop's HTTPS), and the CA as a
    #: PKCS#12 truststore (Java clients)
    keystore: Path
    truststore: Path


def tls_files(st: StackLayout) -> TlsFiles:
    d = st.conf / "tls"
    return TlsFiles(
        d / "ca.pem", d / "server.pem", d / "server-key.pem", d / "server.p12", d / "truststore.p12"
    )


def make_ca(st: StackLayout) -> TlsFiles:
    """A new CA, and a server certificate it signed for localhost and 127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    files = tls_files(st)
    files.ca.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metaproxy stack CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVICE_HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SERVICE_HOST), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files.ca.write_bytes(ca.public_bytes(pem))
    files.cert.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    files.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.key.chmod(0o600)
    password = STORE_PASSWORD.encode()
    files.keystore.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"server", key, cert, [ca], serialization.BestAvailableEncryption(password)
        )
    )
    # a truststore: the CA alone, as a trusted certificate entry (Java reads PKCS#12 trust
    # entries that carry its "trusted key usage" attribute, which this encoder writes)
    files.truststore.write_bytes(
        pkcs12.serialize_java_truststore(
            [pkcs12.PKCS12Certificate(ca, b"ca")], serialization.BestAvailableEncryption(password)
        )
    )
    return files


# -- the stack's own clients -------------------------------------------------------------------

_securities: dict[tuple[str, float], Any] = {}


def stack_security(st: StackLayout) -> Any:
    """How the stack's tools (readiness checks, the sample loader, the tests) reach its HMS and
    WebHDFS: as metaproxy's principal, verifying TLS with the stack's CA."""
    from metaproxy.security import KerberosLogin, Security

    kt = keytab(st, "metaproxy")
    key = (str(kt), kt.stat().st_mtime)  # a new realm has new keys: a new login
    if key not in _securities:
        _securities[key] = Security(
            login=KerberosLogin(PRINCIPALS["metaproxy"].full, str(kt), 600.0, 60.0),
            service_principal=PRINCIPALS["hive"].full,
            spnego=True,
            ca_file=str(tls_files(st).ca),
        )
    return _securities[key]


def use_stack_kerberos(st: StackLayout) -> None:
    """Point this process at the stack's realm (``KRB5_CONFIG``) and, once the keytabs exist,
    make the stack's security what its HMS and WebHDFS clients use by default."""
    from metaproxy.security import use_for_clients

    os.environ.update(kerberos_env(st))
    if keytab(st, "metaproxy").exists():
        use_for_clients(stack_security(st))


def secure_endpoints(st: StackLayout) -> dict[str, Any]:
    """What endpoints.json says of the secure stack (see the package docstring)."""
    files = tls_files(st)
    return {
        "hms": f"thrift://{SERVICE_HOST}:{st.port('hms')}",
        "hdfs": f"hdfs://{SERVICE_HOST}:{st.port('hdfs_rpc')}",
        "webhdfs": f"https://{SERVICE_HOST}:{st.port('hdfs_https')}",
        "proxy": f"thrift://{SERVICE_HOST}:{st.port('proxy')}",
        "proxy_onprem": f"thrift://{SERVICE_HOST}:{st.port('proxy_onprem')}",
        "proxy_passthrough": f"thrift://{SERVICE_HOST}:{st.port('proxy_passthrough')}",
        "admin": f"https://{SERVICE_HOST}:{st.port('proxy_admin')}",
        "gateway": f"https://{SERVICE_HOST}:{st.port('gateway')}",
        "gateway_admin": f"https://{SERVICE_HOST}:{st.port('gateway_admin')}",
        "secure": {
            "realm": REALM,
            "kdc": f"{HOST}:{st.port('kdc')}",
            "krb5_conf": str(krb5_conf_path(st)),
            "principals": {role: p.full for role, p in PRINCIPALS.items()},
            "keytabs": {role: str(keytab(st, role)) for role in PRINCIPALS},
            "ca_file": str(files.ca),
            "cert_file": str(files.cert),
            "key_file": str(files.key),
            "truststore": str(files.truststore),
            "store_password": STORE_PASSWORD,
        },
    }

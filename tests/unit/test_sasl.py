"""SASL over Thrift without a KDC: negotiation messages, security-layer offers, the framed
socket (wrapped per layer by a stand-in context), and the refusal of a plain Thrift client."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import pytest

from metaproxy.config import ConfigError, parse_config
from metaproxy.security import expand_host
from metaproxy.security.kerberos import KeytabError, check_keytab
from metaproxy.security.sasl import (
    COMPLETE,
    ERROR,
    OK,
    START,
    PlainThriftClient,
    SaslError,
    SaslSocket,
    ServerPolicy,
    choose_layer,
    layer_offer,
    parse_layers,
    recv_message,
    send_message,
    server_handshake,
)
from metaproxy.wire import binary

pytestmark = pytest.mark.unit


@dataclass
class _Wrapped:
    message: bytes
    encrypted: bool


class FakeContext:
    """Wraps by prefixing a marker (and reversing, to stand for encryption)."""

    def wrap(self, data: bytes, encrypt: bool) -> _Wrapped:
        return _Wrapped((b"E" + data[::-1]) if encrypt else (b"S" + data), encrypt)

    def unwrap(self, data: bytes) -> _Wrapped:
        if data[:1] == b"E":
            return _Wrapped(data[1:][::-1], True)
        return _Wrapped(data[1:], False)


def test_negotiation_messages_round_trip() -> None:
    a, b = socket.socketpair()
    with a, b:
        send_message(a, START, b"GSSAPI")
        send_message(a, OK, b"")
        send_message(a, COMPLETE, b"x" * 1000)
        assert recv_message(b) == (START, b"GSSAPI")
        assert recv_message(b) == (OK, b"")
        assert recv_message(b) == (COMPLETE, b"x" * 1000)
        send_message(a, ERROR, b"metaproxy: principal x is not allowed")
        with pytest.raises(SaslError, match="peer refused the authentication: metaproxy: principal x"):
            recv_message(b)


def test_a_negotiation_message_that_is_not_one_is_refused() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"\x80\x01\x00\x01\x00\x00\x00\x10")
        with pytest.raises(SaslError, match="not a SASL negotiation message"):
            recv_message(b)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">BI", OK, 1 << 30))
        with pytest.raises(SaslError, match="too long"):
            recv_message(b)


def test_layers_offer_choice_and_the_strongest_common_one() -> None:
    offer = layer_offer(("auth", "auth-conf"), 65536)
    assert offer == bytes([5]) + (65536).to_bytes(3, "big")
    layers, size, rest = parse_layers(offer + b"alice")
    assert layers == ("auth-conf", "auth") and size == 65536 and rest == b"alice"
    assert choose_layer(layers, ("auth-conf", "auth-int", "auth")) == "auth-conf"
    assert choose_layer(layers, ("auth-int", "auth")) == "auth"
    with pytest.raises(SaslError, match="no common SASL quality of protection"):
        choose_layer(("auth-conf",), ("auth",))
    with pytest.raises(SaslError):
        parse_layers(b"\x01")


@pytest.mark.parametrize("layer", ["auth", "auth-int", "auth-conf"])
def test_framed_socket_carries_messages_in_every_layer(layer: str) -> None:
    a, b = socket.socketpair()
    with a, b:
        left = SaslSocket(a, FakeContext(), layer, "me", peer_max=2048)
        right = SaslSocket(b, FakeContext(), layer, "you", peer_max=2048)
        payload = bytes(range(256)) * 40  # 10 KiB: several frames when wrapped
        left.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            got += right.recv(3000)
        assert bytes(got) == payload
        # on the wire: 4-byte lengths, each frame within what the peer takes
        left.sendall(b"hi")
        head = b.recv(4)
        (length,) = struct.unpack(">I", head)
        body = b.recv(length)
        assert body == (b"hi" if layer == "auth" else FakeContext().wrap(b"hi", layer == "auth-conf").message)


def test_an_empty_frame_is_not_the_end_of_the_connection() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">I", 0) + struct.pack(">I", 3) + b"abc")
        assert SaslSocket(b, FakeContext(), "auth", "you").recv(10) == b"abc"
        a.close()
        assert SaslSocket(b, FakeContext(), "auth", "you").recv(10) == b""


def test_an_unencrypted_frame_on_an_auth_conf_connection_is_refused() -> None:
    a, b = socket.socketpair()
    with a, b:
        SaslSocket(a, FakeContext(), "auth-int", "me").sendall(b"hello")
        with pytest.raises(SaslError, match="unencrypted"):
            SaslSocket(b, FakeContext(), "auth-conf", "you").recv(10)


def test_a_frame_beyond_the_limit_is_refused() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">I", 1 << 20))
        with pytest.raises(OSError, match="larger than the limit"):
            SaslSocket(b, FakeContext(), "auth", "you", max_frame=1024).recv(10)


def test_plain_thrift_client_is_recognised() -> None:
    pytest.importorskip("gssapi")
    a, b = socket.socketpair()
    with a, b:
        a.sendall(binary.encode_header("get_all_databases", binary.CALL, 7) + bytes([binary.STOP]))
        with pytest.raises(PlainThriftClient) as info:
            server_handshake(b, None, ServerPolicy())
        assert info.value.data == b"\x80"


def test_host_expansion() -> None:
    assert expand_host("hive/_HOST@EXAMPLE.COM", "NN1.Example.com") == "hive/nn1.example.com@EXAMPLE.COM"
    assert expand_host("trino@EXAMPLE.COM", "x") == "trino@EXAMPLE.COM"
    assert "_HOST" not in expand_host("metaproxy/_HOST@EXAMPLE.COM")


def test_unusable_keytab_names_the_file(tmp_path: object) -> None:
    from pathlib import Path

    missing = Path(str(tmp_path)) / "missing.keytab"
    with pytest.raises(KeytabError, match=str(missing)):
        check_keytab(str(missing), "metaproxy@EXAMPLE.COM")
    garbage = Path(str(tmp_path)) / "garbage.keytab"
    garbage.write_bytes(b"not a keytab")
    with pytest.raises(KeytabError, match="is not a Kerberos keytab"):
        check_keytab(str(garbage), "metaproxy@EXAMPLE.COM")
    assert issubclass(KeytabError, ConfigError)


def test_security_keys_are_checked() -> None:
    cfg = parse_config(
        {
            "metastore": {"kerberos_principal": "metaproxy/_HOST@EXAMPLE.COM", "sasl_qop": ["auth-conf"]},
            "proxy": {
                "listener": [
                    {"port": 1, "auth": "kerberos", "principals": ["trino@EXAMPLE.COM"], "tls": True}
                ]
            },
            "tls": {"cert_file": "/etc/cert.pem", "key_file": "/etc/key.pem"},
            "kerberos": {"check_interval": "10s"},
            "hdfs": {"auth": "kerberos"},
        },
        "t.toml",
    )
    assert cfg.proxy.listeners[0].auth == "kerberos" and cfg.proxy.listeners[0].tls
    assert cfg.kerberos.check_interval_s == 10.0
    with pytest.raises(ConfigError, match="auth"):
        parse_config({"proxy": {"listener": [{"auth": "ldap"}]}}, "t.toml")
    with pytest.raises(ConfigError, match="sasl_qop"):
        parse_config({"metastore": {"sasl_qop": ["privacy"]}}, "t.toml")
    with pytest.raises(ConfigError, match="kerberos_principal"):
        parse_config({"metastore": {"kerberos_principal": "no-realm"}}, "t.toml")

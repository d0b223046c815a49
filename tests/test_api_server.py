# Runs on CPython (pytest): the real uvicorn WebServer on a free port — serve, stream events, stop.
"""``WebServer`` started and stopped for real; the ``[http]`` config validation; the OpenAPI
document and the offline docs page."""

from __future__ import annotations

import json
import socket
import ssl
import threading

import httpx
import pytest

from conftest import wait_until
from host.errors import HostError, InputError
from host.store.readonly import readonly_factory
from host.web.config import HttpConfig, http_config
from host.web.server import WebServer
from api_support import UID, ApiSite


def _server(site: ApiSite, **config) -> WebServer:
    return WebServer(HttpConfig(port=0, **config), writer=site.writer,
                     read_db=readonly_factory(site.path), policy=site.policy, bus=site.bus)


def _read_events(url: str, headers: dict[str, str], out: list[dict], want: int) -> None:
    with httpx.stream("GET", url, headers=headers, timeout=30) as r:
        out.append({"status": r.status_code, "type": r.headers.get("content-type")})
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
                if len(out) > want:
                    return


def test_real_server_serves_streams_and_stops(api_site: ApiSite) -> None:
    server = _server(api_site).start()
    try:
        assert server.port and server.url.startswith("http://127.0.0.1:")
        base, h = server.url, api_site.auth("sales")
        spec = httpx.get(f"{base}/v1/openapi.json").json()
        assert "/v1/members/{member_id}/topups" in spec["paths"]
        assert "/v1/cards/{uid}" in spec["paths"] and "/v1/events" in spec["paths"]
        params = spec["paths"]["/v1/members/{member_id}/topups"]["post"]["parameters"]
        assert {"name": "idempotency-key", "required": True}.items() <= \
            next(p for p in params if p["in"] == "header").items()
        page = httpx.get(f"{base}/v1/docs")
        assert page.status_code == 200 and "openapi.json" in page.text
        assert "://" not in page.text.split("<script>")[1]  # loads nothing from elsewhere
        card = httpx.get(f"{base}/v1/cards/{UID}", headers=h)
        assert card.status_code == 200 and card.json()["id"] == api_site.member_id

        got: list[dict] = []
        reader = threading.Thread(target=_read_events, daemon=True,
                                  args=(f"{base}/v1/events?kinds=tap,sale", h, got, 2))
        reader.start()
        wait_until(lambda: api_site.bus.subscribers == 1, 15, what="the SSE client subscribed")
        api_site.bus.publish("decision", {"seq": 0})  # filtered out by ?kinds
        api_site.bus.publish("tap", {"device_id": "W1", "seq": 7, "uid": UID})
        top = httpx.post(f"{base}/v1/members/{api_site.member_id}/topups",
                         json={"amount_fen": 2500},
                         headers={**h, "Idempotency-Key": "real-server-1"})
        assert top.status_code == 201, top.text
        reader.join(30)
        assert got[0] == {"status": 200, "type": "text/event-stream; charset=utf-8"}
        assert [e["kind"] for e in got[1:]] == ["tap", "sale"]
        assert got[1]["data"] == {"device_id": "W1", "seq": 7, "uid": UID}
        assert got[2]["data"]["topup_fen"] == 2500
    finally:
        server.stop()
    assert not server._thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/v1/openapi.json", timeout=5)


def test_stop_ends_open_event_streams(api_site: ApiSite) -> None:
    server = _server(api_site).start()
    got: list[dict] = []
    reader = threading.Thread(target=_read_events, daemon=True,
                              args=(f"{server.url}/v1/events", api_site.auth("admin"), got, 99))
    reader.start()
    wait_until(lambda: api_site.bus.subscribers == 1, 15, what="the SSE client subscribed")
    server.stop()
    reader.join(30)
    assert not reader.is_alive() and got[0]["status"] == 200
    assert api_site.bus.subscribers == 0 and not server._thread.is_alive()


def test_port_in_use_is_a_host_error(api_site: ApiSite) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = WebServer(HttpConfig(port=port), writer=api_site.writer,
                           read_db=readonly_factory(api_site.path), policy=api_site.policy,
                           bus=api_site.bus)
        with pytest.raises(HostError, match="cannot serve the HTTP API"):
            server.start()


def test_http_config_validation(tmp_path) -> None:
    assert http_config(None) == HttpConfig(True, "127.0.0.1", 8080, None, None)
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    c = http_config({"address": "0.0.0.0", "port": 8443, "tls_cert": str(cert),
                     "tls_key": str(key)})
    assert c.tls and c.port == 8443
    bad = [{"port": 70000}, {"port": "80"}, {"port": True}, {"address": ""},
           {"tls_cert": str(cert)}, {"tls_cert": str(cert), "tls_key": str(tmp_path / "no")},
           {"enabled": "yes"}, {"prot": 1}]
    for table in bad:
        with pytest.raises(InputError, match=r"\[http\]"):
            http_config(table)


def _self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tapkiosk test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "api.crt", tmp_path / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_server(api_site: ApiSite, tmp_path) -> None:
    cert, key = _self_signed(tmp_path)
    server = _server(api_site, tls_cert=cert, tls_key=key).start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        r = httpx.get(f"{server.url}/v1/members/{api_site.member_id}",
                      headers=api_site.auth("members"),
                      verify=ssl.create_default_context(cafile=cert))
        assert r.status_code == 200 and r.json()["id"] == api_site.member_id
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(server.url.replace("https:", "http:") + "/v1/openapi.json", timeout=5)
    finally:
        server.stop()

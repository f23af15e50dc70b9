"""ca_trust: a TLS server whose certificate the test CA signed is trusted by the host's default store."""

import pytest

SERVER = "/root/mol-server"


@pytest.fixture(scope="module")
def tls_server(host):
    # A real TLS server on the host, with a certificate from the test CA (copied in by prepare.yml).
    cmd = host.run(
        "cd %s && (python3 -c \"import http.server,ssl;s=http.server.HTTPServer(('127.0.0.1',8443),"
        "http.server.SimpleHTTPRequestHandler);c=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER);"
        "c.load_cert_chain('server.crt','server.key');s.socket=c.wrap_socket(s.socket,server_side=True);"
        's.serve_forever()" >/dev/null 2>&1 &) && sleep 1',
        SERVER,
    )
    assert cmd.rc == 0
    yield "https://localhost:8443/"
    host.run("pkill -f 'HTTPServer' || true")


def test_the_ca_is_in_the_system_bundle(host):
    bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
    ca = host.file("/usr/local/share/ca-certificates/mlfleet-test-ca.crt").content_string
    assert ca.strip() in bundle


def test_python_trusts_a_server_signed_by_the_ca(host, tls_server):
    res = host.run("python3 -c \"import urllib.request;print(urllib.request.urlopen('%s').status)\"", tls_server)
    assert res.rc == 0, res.stderr
    assert res.stdout.strip() == "200"

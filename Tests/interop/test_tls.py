"""TLS on the serving port: grpcio secure channels, tritonclient ssl=True, curl, openssl s_client,
mTLS, SIGHUP reloads, and clients that speak the wrong thing. Every key and certificate is made
here, at test time, with `cryptography` (nothing secret is committed)."""
import datetime
import http.client
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import gevent.ssl
import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import RunningProcess, binary, wait_for

NOW = datetime.datetime.now(datetime.timezone.utc)
LOCALHOST_NAMES = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key, path):
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _write_cert(cert, path):
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class Authority:
    """A CA that signs leaf certificates into `directory`."""

    def __init__(self, directory, name):
        self.directory = directory
        self.key = _key()
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.path = directory / f"{name}.pem"
        _write_cert(self.cert, self.path)

    def issue(self, name, server=True, not_before=None, not_after=None, self_signed=False):
        """Writes NAME.pem and NAME.key; returns (cert path, key path, serial)."""
        key = _key()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder().subject_name(_name(name))
            .issuer_name(_name(name) if self_signed else self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
            .not_valid_after(not_after or NOW + datetime.timedelta(days=10))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(LOCALHOST_NAMES), critical=False)
        cert = builder.sign(key if self_signed else self.key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        _write_cert(cert, cert_path)
        _write_key(key, key_path)
        return cert_path, key_path, cert.serial_number


class PKI:
    def __init__(self, directory):
        self.dir = directory
        self.ca = Authority(directory, "ca")
        self.other_ca = Authority(directory, "other-ca")
        self.server_cert, self.server_key, self.server_serial = self.ca.issue("server")
        self.server2_cert, self.server2_key, self.server2_serial = self.ca.issue("server2")
        self.client_cert, self.client_key, _ = self.ca.issue("client", server=False)
        self.foreign_client_cert, self.foreign_client_key, _ = self.other_ca.issue("foreign-client", server=False)
        self.expired_client_cert, self.expired_client_key, _ = self.ca.issue(
            "expired-client", server=False, not_before=NOW - datetime.timedelta(days=10), not_after=NOW - datetime.timedelta(days=1))
        self.expired_cert, self.expired_key, _ = self.ca.issue(
            "expired", not_before=NOW - datetime.timedelta(days=10), not_after=NOW - datetime.timedelta(days=1))
        self.self_signed_cert, self.self_signed_key, _ = self.ca.issue("self-signed", self_signed=True)

    def read(self, path):
        return path.read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def serve(cert, key, *extra):
    return RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--handshake-timeout", "3",
                           "--tls-cert", str(cert), "--tls-key", str(key), *map(str, extra)])


@pytest.fixture(scope="module")
def tls_server(pki):
    process = serve(pki.server_cert, pki.server_key)
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def mtls_server(pki):
    process = serve(pki.server_cert, pki.server_key, "--tls-client-ca", pki.ca.path)
    yield process
    assert process.stop() == 0


def secure_channel(server, pki, root=None, client=None):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.read(root or pki.ca.path),
        private_key=pki.read(client[1]) if client else None,
        certificate_chain=pki.read(client[0]) if client else None)
    return grpc.secure_channel(f"localhost:{server.port}", credentials)


def health(channel, timeout=5):
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status


def seed_inputs(module):
    x = np.arange(20, dtype=np.float32).reshape(2, 10) / 10
    inp = module.InferInput("input", [2, 10], "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


def presented_serial(port):
    """The serial number of the certificate a new handshake presents."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def s_client(port, *args, stdin=b"", timeout=15):
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *map(str, args)],
                          input=stdin, capture_output=True, timeout=timeout)


# MARK: grpcio, tritonclient, curl, openssl against a TLS port


def test_grpcio_secure_channel_health_and_infer(tls_server, pki):
    with secure_channel(tls_server, pki) as channel:
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
    client = grpcclient.InferenceServerClient(f"localhost:{tls_server.port}", ssl=True, root_certificates=str(pki.ca.path))
    assert wait_for(client.is_server_ready, timeout=30)
    result = client.infer("seed", seed_inputs(grpcclient))
    assert result.as_numpy("output").shape == (2, 10)


def test_tritonclient_http_over_tls(tls_server, pki):
    client = httpclient.InferenceServerClient(
        f"localhost:{tls_server.port}", ssl=True, ssl_options={"ca_certs": str(pki.ca.path)},
        ssl_context_factory=gevent.ssl.create_default_context)
    assert client.is_server_ready()
    result = client.infer("seed", seed_inputs(httpclient))
    assert result.as_numpy("output").shape == (2, 10)


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_curl_with_cacert(tls_server, pki, version):
    run = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca.path), version,
                          "-w", "\n%{http_code} %{http_version}", f"https://localhost:{tls_server.port}/v2/health/ready"],
                         capture_output=True, text=True, timeout=20)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == ("200 1.1" if version == "--http1.1" else "200 2")


def test_curl_refuses_a_server_it_does_not_trust(tls_server, pki):
    run = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(pki.other_ca.path),
                          f"https://localhost:{tls_server.port}/v2/health/ready"], capture_output=True, text=True, timeout=20)
    assert run.returncode == 60, run.stderr  # peer certificate cannot be authenticated


@pytest.mark.parametrize("alpn", ["h2", "http/1.1"])
def test_openssl_alpn(tls_server, pki, alpn):
    run = s_client(tls_server.port, "-alpn", alpn, "-CAfile", pki.ca.path, "-verify_return_error")
    out = run.stdout.decode(errors="replace")
    assert f"ALPN protocol: {alpn}" in out, out
    assert "Verify return code: 0 (ok)" in out


@pytest.mark.parametrize("flag, accepted", [("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)])
def test_protocol_versions(tls_server, pki, flag, accepted):
    # SECLEVEL=0 lets OpenSSL 3 offer TLS 1.1 at all: the refusal must be the server's.
    run = s_client(tls_server.port, flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", pki.ca.path)
    out = run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")
    negotiated = {"-tls1_1": "TLSv1.1", "-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}[flag]
    if accepted:
        assert f"Protocol  : {negotiated}" in out or f"New, {negotiated}" in out, out
    else:
        assert run.returncode != 0 and "alert protocol version" in out, out


def test_tls_client_trusting_another_ca_is_refused(tls_server, pki):
    with secure_channel(tls_server, pki, root=pki.other_ca.path) as channel:
        with pytest.raises(grpc.RpcError) as error:
            health(channel)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_self_signed_server_certificate_is_not_trusted(pki):
    process = serve(pki.self_signed_cert, pki.self_signed_key)
    try:
        with secure_channel(process, pki) as channel:
            with pytest.raises(grpc.RpcError) as error:
                health(channel)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        run = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca.path),
                              f"https://localhost:{process.port}/v2/health/ready"], capture_output=True, text=True, timeout=20)
        assert run.returncode == 60, run.stderr
    finally:
        assert process.stop() == 0


@pytest.mark.parametrize("command", ["maas", "maas-interop"])
def test_expired_or_mismatched_server_pair_is_refused_at_start(pki, command):
    args = ["serve", "--port", "0"] if command == "maas" else ["serve-models", "--port", "0"]
    run = subprocess.run([binary(command), *args, "--tls-cert", str(pki.expired_cert), "--tls-key", str(pki.expired_key)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode != 0
    assert "expired" in run.stderr + run.stdout
    run = subprocess.run([binary(command), *args, "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server2_key)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode != 0
    assert "key" in run.stderr + run.stdout


# MARK: mTLS


def test_mtls_accepts_a_client_certificate_from_the_ca(mtls_server, pki):
    with secure_channel(mtls_server, pki, client=(pki.client_cert, pki.client_key)) as channel:
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
    client = grpcclient.InferenceServerClient(
        f"localhost:{mtls_server.port}", ssl=True, root_certificates=str(pki.ca.path),
        private_key=str(pki.client_key), certificate_chain=str(pki.client_cert))
    assert wait_for(client.is_server_ready, timeout=30)
    assert client.infer("seed", seed_inputs(grpcclient)).as_numpy("output").shape == (2, 10)


@pytest.mark.parametrize("client", [None, "foreign", "expired"])
def test_mtls_refuses_a_client_without_a_good_certificate(mtls_server, pki, client):
    pair = {None: None, "foreign": (pki.foreign_client_cert, pki.foreign_client_key),
            "expired": (pki.expired_client_cert, pki.expired_client_key)}[client]
    with secure_channel(mtls_server, pki, client=pair) as channel:
        with pytest.raises(grpc.RpcError) as error:
            health(channel)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_openssl_without_a_client_certificate_is_refused(mtls_server, pki):
    # TLS 1.3 sends the client's (empty) certificate after the server's Finished: the refusal
    # arrives as an alert when the client reads.
    run = s_client(mtls_server.port, "-CAfile", pki.ca.path, "-alpn", "http/1.1", "-ign_eof",
                   stdin=b"GET /v2/health/ready HTTP/1.1\r\nhost: localhost\r\n\r\n")
    out = run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")
    assert "certificate required" in out or "handshake failure" in out, out
    assert "HTTP/1.1 200" not in out
    run = s_client(mtls_server.port, "-CAfile", pki.ca.path, "-cert", pki.client_cert, "-key", pki.client_key, "-alpn", "http/1.1", "-ign_eof",
                   stdin=b"GET /v2/health/ready HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
    assert "HTTP/1.1 200" in run.stdout.decode(errors="replace"), run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")


def test_curl_with_a_client_certificate(mtls_server, pki):
    base = ["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca.path), "-o", "/dev/null", "-w", "%{http_code}"]
    url = f"https://localhost:{mtls_server.port}/v2/health/ready"
    run = subprocess.run([*base, "--cert", str(pki.client_cert), "--key", str(pki.client_key), url], capture_output=True, text=True, timeout=20)
    assert run.stdout == "200", run.stderr
    run = subprocess.run([*base, url], capture_output=True, text=True, timeout=20)
    assert run.returncode != 0 and run.stdout != "200"


# MARK: the wrong protocol on either side


def test_cleartext_clients_on_a_tls_port_fail_at_once(tls_server):
    start = time.monotonic()
    with grpc.insecure_channel(tls_server.address) as channel:
        with pytest.raises(grpc.RpcError) as error:
            health(channel, timeout=8)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - start < 5
    # HTTP/1.1 in clear text: told why, then closed.
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 400") and b"TLS" in reply
    # The h2c preface: closed without an answer.
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert sock.recv(4096) == b""


def test_tls_client_on_a_cleartext_port_fails_at_once(swift_server, pki):
    start = time.monotonic()
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.read(pki.ca.path))
    with grpc.secure_channel(f"localhost:{swift_server.port}", credentials) as channel:
        with pytest.raises(grpc.RpcError) as error:
            health(channel, timeout=8)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - start < 5
    run = subprocess.run(["curl", "-sS", "--max-time", "8", "--cacert", str(pki.ca.path),
                          f"https://localhost:{swift_server.port}/"], capture_output=True, text=True, timeout=20)
    assert run.returncode == 35, run.stderr  # SSL connect error, not a timeout (28)


def test_allow_cleartext_serves_both_on_one_port(pki):
    process = serve(pki.server_cert, pki.server_key, "--allow-cleartext")
    try:
        with grpc.insecure_channel(process.address) as channel:
            assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        with secure_channel(process, pki) as channel:
            assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        for url, extra in [(f"http://127.0.0.1:{process.port}/v2/health/ready", []),
                           (f"http://127.0.0.1:{process.port}/v2/health/ready", ["--http2-prior-knowledge"]),
                           (f"https://localhost:{process.port}/v2/health/ready", ["--cacert", str(pki.ca.path)])]:
            run = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", *extra, url],
                                 capture_output=True, text=True, timeout=20)
            assert run.stdout == "200", (url, run.stderr)
    finally:
        assert process.stop() == 0


# MARK: SIGHUP


def test_sighup_reloads_the_pair_and_keeps_open_connections(pki, tmp_path):
    cert, key = tmp_path / "tls.pem", tmp_path / "tls.key"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    process = serve(cert, key)
    try:
        assert presented_serial(process.port) == pki.server_serial
        channel = secure_channel(process, pki)
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        keepalive = http.client.HTTPSConnection("localhost", process.port, timeout=5,
                                                context=ssl.create_default_context(cafile=str(pki.ca.path)))
        keepalive.request("GET", "/v2/health/ready")
        response = keepalive.getresponse()
        response.read()
        assert response.status == 200
        sock = keepalive.sock

        # A good new pair: new handshakes present it, open connections carry on.
        shutil.copy(pki.server2_cert, cert)
        shutil.copy(pki.server2_key, key)
        process.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: presented_serial(process.port) == pki.server2_serial, timeout=5)
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        keepalive.request("GET", "/v2/health/ready")
        response = keepalive.getresponse()
        response.read()
        assert response.status == 200
        assert keepalive.sock is sock, "the open connection was replaced"

        # A bad pair (the key of another certificate, then no certificate at all): refused, the
        # last good pair stays.
        shutil.copy(pki.server_key, key)
        process.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert presented_serial(process.port) == pki.server2_serial
        cert.write_text("not a certificate\n")
        process.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert presented_serial(process.port) == pki.server2_serial
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        keepalive.close()
        channel.close()
    finally:
        code = process.stop()
    log = process.proc.stderr.read()
    assert code == 0
    assert log.count("TLS reload refused") == 2, log


# MARK: the Swift client and CLI


def maas(*args, timeout=60):
    return subprocess.run([binary("maas"), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_maas_health_and_models_over_tls(tls_server, pki):
    run = maas("health", "--host", "localhost", "--port", tls_server.port, "--tls-ca", pki.ca.path)
    assert run.returncode == 0 and run.stdout.strip() == "SERVING", run.stdout + run.stderr
    run = maas("health", "--port", tls_server.port, "--tls-ca", pki.ca.path)  # 127.0.0.1: checked against the IP SAN
    assert run.returncode == 0, run.stdout + run.stderr
    run = maas("health", "--host", "localhost", "--port", tls_server.port, "--tls-ca", pki.other_ca.path)
    assert run.returncode == 2 and "TLS handshake" in run.stdout, run.stdout + run.stderr
    run = maas("health", "--port", tls_server.port)  # cleartext to a TLS port
    assert run.returncode != 0
    run = maas("models", "list", "--server", f"localhost:{tls_server.port}", "--tls-ca", pki.ca.path, "--json")
    assert run.returncode == 0 and "seed" in run.stdout, run.stdout + run.stderr


def test_maas_infer_over_tls_grpc_and_rest(tls_server, pki, tmp_path):
    np.save(tmp_path / "input.npy", np.ones((3, 10), dtype=np.float32))
    for transport in [[], ["--http"]]:
        out = tmp_path / ("rest" if transport else "grpc")
        run = maas("infer", "--server", f"localhost:{tls_server.port}", "--tls-ca", pki.ca.path, "--model", "seed",
                   "--input", f"input={tmp_path / 'input.npy'}", "--output-dir", out, *transport)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "TLS" in run.stderr
        assert np.load(out / "output.npy").shape == (3, 10)


def test_maas_client_certificates_under_mtls(mtls_server, pki):
    run = maas("health", "--host", "localhost", "--port", mtls_server.port, "--tls-ca", pki.ca.path,
               "--tls-cert", pki.client_cert, "--tls-key", pki.client_key)
    assert run.returncode == 0, run.stdout + run.stderr
    run = maas("health", "--host", "localhost", "--port", mtls_server.port, "--tls-ca", pki.ca.path)
    assert run.returncode != 0
    run = maas("models", "list", "--server", f"localhost:{mtls_server.port}", "--tls-ca", pki.ca.path,
               "--tls-cert", pki.foreign_client_cert, "--tls-key", pki.foreign_client_key)
    assert run.returncode != 0

"""Who may connect (issue 14): TLS, mutual TLS and a bearer token on the gRPC port, with
certificates made by openssl for each test run; wrong or missing credentials get nothing."""
import subprocess
import time

import grpc
import pytest

from conftest import binary, sample_images

MODEL = "shvit_s1"


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed(directory, ca, name, san=None):
    """A P-256 key and a certificate for `name` signed by `ca` (the CA's file stem)."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    extra = []
    if san:
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", f"{name}.ext"]
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extra, cwd=directory)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "rogue_ca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                 "-subj", f"/CN={ca}", cwd=d)
    _signed(d, "ca", "server", san="DNS:localhost,IP:127.0.0.1")
    _signed(d, "ca", "client")
    _signed(d, "rogue_ca", "rogue_client")
    (d / "token.txt").write_text("s3cret-token\n")
    (d / "wrong_token.txt").write_text("not-the-token\n")
    return d


def classify(server, *flags):
    image = str(sample_images()[0])
    return subprocess.run([str(binary("vitserve-client")), "classify", "--server",
                           server.grpc_target, "--model", MODEL, "--timeout", "20", *flags, image],
                          capture_output=True, text=True, timeout=120)


def test_tls_serves_clients_that_trust_its_ca_only(start_server, certs):
    server = start_server(f"--model={MODEL}", f"--tls-cert={certs / 'server.pem'}",
                          f"--tls-key={certs / 'server.key'}")
    ok = classify(server, "--tls-ca", str(certs / "ca.pem"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip(), "no classification printed"
    plaintext = classify(server)
    assert plaintext.returncode == 1 and "UNAVAILABLE" in plaintext.stderr, plaintext.stderr
    untrusted = classify(server, "--tls-ca", str(certs / "rogue_ca.pem"))
    assert untrusted.returncode == 1 and "UNAVAILABLE" in untrusted.stderr, untrusted.stderr


def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(start_server, certs):
    server = start_server(f"--model={MODEL}", f"--tls-cert={certs / 'server.pem'}",
                          f"--tls-key={certs / 'server.key'}",
                          f"--tls-client-ca={certs / 'ca.pem'}")
    ca = ("--tls-ca", str(certs / "ca.pem"))
    ok = classify(server, *ca, "--tls-cert", str(certs / "client.pem"),
                  "--tls-key", str(certs / "client.key"))
    assert ok.returncode == 0, ok.stderr
    without = classify(server, *ca)
    assert without.returncode == 1 and "UNAVAILABLE" in without.stderr, without.stderr
    rogue = classify(server, *ca, "--tls-cert", str(certs / "rogue_client.pem"),
                     "--tls-key", str(certs / "rogue_client.key"))
    assert rogue.returncode == 1 and "UNAVAILABLE" in rogue.stderr, rogue.stderr


def test_bearer_token_is_checked_on_every_call_but_health(start_server, certs):
    server = start_server(f"--model={MODEL}", f"--tls-cert={certs / 'server.pem'}",
                          f"--tls-key={certs / 'server.key'}",
                          f"--auth-token-file={certs / 'token.txt'}")
    ca = ("--tls-ca", str(certs / "ca.pem"))
    ok = classify(server, *ca, "--token-file", str(certs / "token.txt"))
    assert ok.returncode == 0, ok.stderr
    missing = classify(server, *ca)
    assert missing.returncode == 1, missing.stderr
    assert "UNAUTHENTICATED" in missing.stderr and "bearer token" in missing.stderr, missing.stderr
    wrong = classify(server, *ca, "--token-file", str(certs / "wrong_token.txt"))
    assert wrong.returncode == 1 and "UNAUTHENTICATED: wrong bearer token" in wrong.stderr, \
        wrong.stderr
    # The standard health service stays open for probes (--auth-exempt-health, the default),
    # while every other service wants the token.
    credentials = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes())
    with grpc.secure_channel(server.grpc_target, credentials) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda _: b"",
                                    response_deserializer=lambda data: data)
        assert check(None, timeout=20) == b"\x08\x01"  # status: SERVING
        live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive",
                                   request_serializer=lambda _: b"",
                                   response_deserializer=lambda data: data)
        with pytest.raises(grpc.RpcError) as refused:
            live(None, timeout=20)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_bad_security_flags_stop_the_server_with_a_reason(start_server, certs, tmp_path):
    cases = [
        ([f"--auth-token-file={certs / 'token.txt'}"], "needs --tls-cert and --tls-key"),
        ([f"--tls-cert={certs / 'server.pem'}"], "both --tls-cert and --tls-key"),
        ([f"--tls-client-ca={certs / 'ca.pem'}"], "--tls-client-ca needs"),
        ([f"--tls-cert={tmp_path / 'absent.pem'}", f"--tls-key={certs / 'server.key'}"],
         "--tls-cert: cannot read"),
    ]
    for flags, reason in cases:
        server = start_server(f"--model={MODEL}", *flags, wait=False)
        code = server.proc.wait(timeout=120)
        assert code != 0, flags
        assert reason in server.log(), (flags, server.log())


# --- the REST port: HTTPS with the same certificate, mutual TLS, the bearer token --------------

def _curl_rest(server, path, *flags, scheme="https"):
    image = str(sample_images()[0])
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", *flags]
    if path.endswith(":classify"):
        args += ["-F", f"image=@{image}"]
    result = subprocess.run([*args, f"{scheme}://127.0.0.1:{server.rest_port}{path}"],
                            capture_output=True, text=True, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else f"curl {result.returncode}"


def test_rest_serves_https_and_mutual_tls(start_server, certs):
    server = start_server(f"--model={MODEL}", f"--tls-cert={certs / 'server.pem'}",
                          f"--tls-key={certs / 'server.key'}",
                          f"--tls-client-ca={certs / 'ca.pem'}")
    classify_path = f"/v1/models/{MODEL}:classify"
    client = ("--cacert", str(certs / "ca.pem"), "--cert", str(certs / "client.pem"),
              "--key", str(certs / "client.key"))
    assert _curl_rest(server, classify_path, *client) == "200"
    # No client certificate, one from another CA, plaintext, an untrusted server: no answer.
    assert _curl_rest(server, classify_path, "--cacert", str(certs / "ca.pem")).startswith("curl")
    assert _curl_rest(server, classify_path, "--cacert", str(certs / "ca.pem"), "--cert",
                      str(certs / "rogue_client.pem"), "--key",
                      str(certs / "rogue_client.key")).startswith("curl")
    # Plaintext to the TLS port gets no HTTP answer: curl fails (52, 55 or 56, depending on
    # when the server drops the connection) or sees no status ("000").
    plaintext = _curl_rest(server, classify_path, scheme="http")
    assert plaintext.startswith("curl") or plaintext == "000", plaintext
    assert _curl_rest(server, classify_path, "--cacert", str(certs / "rogue_ca.pem"), "--cert",
                      str(certs / "client.pem"), "--key", str(certs / "client.key")
                      ).startswith("curl")


def test_rest_checks_the_bearer_token_on_every_route_but_health(start_server, certs):
    server = start_server(f"--model={MODEL}", f"--tls-cert={certs / 'server.pem'}",
                          f"--tls-key={certs / 'server.key'}",
                          f"--auth-token-file={certs / 'token.txt'}")
    ca = ("--cacert", str(certs / "ca.pem"))
    good = ("-H", "Authorization: Bearer s3cret-token")
    bad = ("-H", "Authorization: Bearer not-the-token")
    for path in (f"/v1/models/{MODEL}:classify", f"/v2/models/{MODEL}", "/v2",
                 "/v2/models/stats"):
        assert _curl_rest(server, path, *ca, *good) == "200", path
        assert _curl_rest(server, path, *ca, *bad) == "401", path
        assert _curl_rest(server, path, *ca) == "401", path
    assert _curl_rest(server, "/v2/health/ready", *ca) == "200"
    assert _curl_rest(server, "/v2/health/live", *ca) == "200"


def _wait_rest_ready(server, *flags, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while _curl_rest(server, "/v2/health/ready", *flags) != "200":
        assert server.proc.poll() is None, server.log()
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.3)


def test_metrics_are_scraped_over_https_with_the_token_and_the_plaintext_port_can_be_off(
        start_server, certs):
    tls = (f"--tls-cert={certs / 'server.pem'}", f"--tls-key={certs / 'server.key'}",
           f"--auth-token-file={certs / 'token.txt'}")
    ca = ("--cacert", str(certs / "ca.pem"))
    good = ("-H", "Authorization: Bearer s3cret-token")
    server = start_server(f"--model={MODEL}", *tls, "--http-port=-1", wait=False)
    _wait_rest_ready(server, *ca)
    assert _curl_rest(server, "/metrics", *ca, *good) == "200"
    assert _curl_rest(server, "/metrics", *ca) == "401"
    assert _curl_rest(server, "/metrics", *ca, "-H", "Authorization: Bearer wrong") == "401"
    body = subprocess.run(["curl", "-sS", "--max-time", "30", *ca, *good,
                           f"https://127.0.0.1:{server.rest_port}/metrics"],
                          capture_output=True, text=True, timeout=60).stdout
    assert "vitserve_model_ready{" in body, body[:500]
    # --http-port=-1: nothing listens on the plaintext port, and the banner does not offer it.
    with pytest.raises(OSError):
        server.http_get("/metrics")
    assert "  HTTP  " not in server.log()

    # --auth-exempt-metrics opens /metrics (for a scraper without the token), nothing else.
    open_metrics = start_server(f"--model={MODEL}", *tls, "--auth-exempt-metrics")
    assert _curl_rest(open_metrics, "/metrics", *ca) == "200"
    assert _curl_rest(open_metrics, "/v2", *ca) == "401"
    assert open_metrics.http_get("/metrics")[0] == 200  # The plaintext port: on by default.

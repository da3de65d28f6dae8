"""TLS to Consul against a real agent serving HTTPS with certificates made by `consul tls`."""

from __future__ import annotations

import subprocess

import pytest
from consul_harness import free_port
from ctemplate_proc import run_ctemplate


@pytest.fixture(scope="module")
def tls_agent(consul_binary, tmp_path_factory):
    """An agent whose HTTPS port requires a client certificate signed by its own CA."""
    from consul_harness import ConsulAgent

    certs = tmp_path_factory.mktemp("certs")
    for args in (["ca", "create"], ["cert", "create", "-server"], ["cert", "create", "-client"]):
        subprocess.run([consul_binary, "tls", *args], cwd=certs, check=True, capture_output=True)
    port = free_port()
    agent = ConsulAgent(
        consul_binary,
        extra_args=[
            "-hcl",
            f"ports {{ https = {port} }}",
            "-hcl",
            f'ca_file = "{certs}/consul-agent-ca.pem" '
            f'cert_file = "{certs}/dc1-server-consul-0.pem" '
            f'key_file = "{certs}/dc1-server-consul-0-key.pem" '
            "verify_incoming_https = true",
        ],
    )
    agent.start()
    agent.put_kv("tls/greeting", "hello over TLS")
    try:
        yield agent, port, certs
    finally:
        agent.close()


def _config(tmp_path, port, ssl: str) -> str:
    src = tmp_path / "t.j2"
    src.write_text('{{ key("tls/greeting") }}\n')
    config = tmp_path / "ct.hcl"
    config.write_text(
        f'consul {{\n  address = "127.0.0.1:{port}"\n  retry {{ attempts = 1 }}\n'
        f"  ssl {{\n{ssl}\n  }}\n}}\n"
        f'template {{\n  source = "{src}"\n  destination = "{tmp_path / "out"}"\n}}\n'
    )
    return str(config)


def test_client_certificate_ca_and_server_name(tls_agent, tmp_path):
    _agent, port, certs = tls_agent
    ssl = (
        f'    ca_cert = "{certs}/consul-agent-ca.pem"\n'
        f'    cert = "{certs}/dc1-client-consul-0.pem"\n'
        f'    key = "{certs}/dc1-client-consul-0-key.pem"\n'
        '    server_name = "server.dc1.consul"'
    )
    result = run_ctemplate(["-config", _config(tmp_path, port, ssl), "-once"])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_text() == "hello over TLS\n"


def test_wrong_server_name_is_refused(tls_agent, tmp_path):
    _agent, port, certs = tls_agent
    ssl = (
        f'    ca_cert = "{certs}/consul-agent-ca.pem"\n'
        f'    cert = "{certs}/dc1-client-consul-0.pem"\n'
        f'    key = "{certs}/dc1-client-consul-0-key.pem"\n'
        '    server_name = "consul.example.com"'
    )
    result = run_ctemplate(["-config", _config(tmp_path, port, ssl), "-once"], timeout=60)
    assert result.returncode == 14
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ctemplate: error: GET /v1/kv/tls/greeting: cannot reach Consul")
    assert "Hostname mismatch" in lines[-1], result.stderr
    assert "check the TLS settings in consul.ssl" in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_verify_false_skips_the_server_check(tls_agent, tmp_path):
    _agent, port, certs = tls_agent
    ssl = (
        "    verify = false\n"
        f'    cert = "{certs}/dc1-client-consul-0.pem"\n'
        f'    key = "{certs}/dc1-client-consul-0-key.pem"'
    )
    result = run_ctemplate(["-config", _config(tmp_path, port, ssl), "-once"])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_text() == "hello over TLS\n"

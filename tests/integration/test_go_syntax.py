"""Go-syntax templates through the real ``ctemplate`` against a real Consul agent:

* the workshop's step 6, ``sample.conf.ctmpl`` and ``consul-template.hcl`` byte for byte as the
  seed prints them (only the agent's address, the paths and the reload command changed), gives
  exactly the file the seed shows, blank line included;
* every template under templates/ exists in both syntaxes and both render the same bytes, and
  so does the Jinja that ``ctemplate convert`` writes from the Go one.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_instances import deregister, register_app_instances
from consul_harness import REPO_ROOT, ConsulAgent
from ctemplate_proc import run_ctemplate

TEMPLATES = REPO_ROOT / "templates"

# /usr/local/sample.conf.ctmpl as the workshop's step 6 writes it (its heredoc turns \$ into $).
WORKSHOP_CTMPL = """\
upstream backend_apps {
{{range service "production.application@dc1" "passing"}}
    server {{.Address}}:{{.Port}};{{end}}
}
server {
    listen      80;
    server_name _;
    proxy_set_header Host               $host;
    proxy_set_header X-Real-IP          $remote_addr;
    proxy_set_header X-Forwarded-For    $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Host   $host;
    proxy_set_header X-Forwarded-Server $host;
    location / {
        proxy_pass http://backend_apps;
    }
}
"""

WORKSHOP_HCL = """\
consul = "127.0.0.1:8500"
retry = "10s"
max_stale = "10m"
log_level = "info"
pid_file = "/var/run/consul-template.pid"
template {
  source = "/usr/local/sample.conf.ctmpl"
  destination = "/etc/nginx/conf.d/sample.conf"
  command = "systemctl reload nginx"
}
"""


@pytest.fixture
def backends(consul: ConsulAgent) -> Iterator[None]:
    """back01..03 running `application` on port 3000, tagged production; back01 failing (the
    seed's step 7 output: 112 and 113 left)."""
    nodes = {"back01": "critical", "back02": "passing", "back03": "passing"}
    for i, (node, status) in enumerate(nodes.items(), start=1):
        consul.register_external(
            node,
            f"127.168.100.{110 + i}",
            "application",
            port=3000,
            tags=["production"],
            checks=[
                {
                    "CheckID": f"{node}-app",
                    "Name": "app",
                    "Status": status,
                    "ServiceID": "application",
                }
            ],
        )
    try:
        yield
    finally:
        for node in nodes:
            consul.deregister_external(node)


def test_workshop_step6_unchanged(consul: ConsulAgent, backends: None, tmp_path: Path) -> None:
    src, dest, reloads = tmp_path / "sample.conf.ctmpl", tmp_path / "sample.conf", tmp_path / "r"
    src.write_text(WORKSHOP_CTMPL)
    config = tmp_path / "consul-template.hcl"
    config.write_text(
        WORKSHOP_HCL.replace("127.0.0.1:8500", consul.http_addr)
        .replace("/var/run/consul-template.pid", str(tmp_path / "ct.pid"))
        .replace("/usr/local/sample.conf.ctmpl", str(src))
        .replace("/etc/nginx/conf.d/sample.conf", str(dest))
        .replace("systemctl reload nginx", f"echo reload >> {reloads}")
    )
    result = run_ctemplate(["-config", str(config), "-once"], timeout=60)
    assert result.returncode == 0, result.stderr
    assert dest.read_text() == (
        "upstream backend_apps {\n"
        "\n"
        "    server 127.168.100.112:3000;\n"
        "    server 127.168.100.113:3000;\n"
        "}\n" + WORKSHOP_CTMPL.split("{{end}}\n}\n", 1)[1]
    )
    assert reloads.read_text() == "reload\n"


# --- templates/: both syntaxes, and convert ------------------------------------------------

KV = {
    "database/url": "postgres://app:s3cr3t@db:5432/app?sslmode=require",
    "greeting": 'it\'s "fine" $HOME `echo pwned` $(echo pwned) \\n back\\slash',
    "multi-line": "line 1\nline 2\n",
    "empty": "",
    "log.level": "debug",
    "9lives": "skipped",
    "café": "skipped",
    "trailing\n": "skipped: a newline in the name",
}


@pytest.fixture
def app_data(consul: ConsulAgent, unique: str) -> Iterator[dict[str, str]]:
    """Instances of ``app-<unique>`` (IPv6, bad addresses, failing, untagged) and a KV tree."""
    name, ids = register_app_instances(consul, unique)
    prefix = f"{unique}/env"
    # Through a transaction: a key with a newline cannot be written in a URL.
    consul.txn(
        [
            {
                "KV": {
                    "Verb": "set",
                    "Key": f"{prefix}/{key}",
                    "Value": base64.b64encode(value.encode()).decode(),
                }
            }
            for key, value in KV.items()
        ]
    )
    consul.put_kv(f"{prefix}/folder/", "")
    try:
        yield {"APP_SERVICE": f"production.{name}", "APP_ENV_PREFIX": prefix}
    finally:
        deregister(consul, ids)
        consul.delete_kv(unique, recurse=True)


def _convert(src: Path, out: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ctemplate", "convert", str(src), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("with_instances", [True, False])
def test_templates_render_the_same_in_both_syntaxes_and_converted(
    consul: ConsulAgent, app_data: dict[str, str], tmp_path: Path, with_instances: bool
) -> None:
    env = dict(app_data)
    if not with_instances:
        env["APP_SERVICE"] = "production.no-such-service-" + tmp_path.name
        env["APP_ENV_PREFIX"] = "no/such/prefix/" + tmp_path.name
    go_templates = sorted(TEMPLATES.glob("*.ctmpl"))
    assert [p.name for p in go_templates] == [
        "app.env.ctmpl",
        "haproxy-backend.cfg.ctmpl",
        "nginx-upstream.conf.ctmpl",
    ]
    args = ["-consul-addr", consul.http_addr, "-once"]
    outputs = {}
    for go in go_templates:
        jinja = go.with_suffix(".j2")
        assert jinja.exists(), f"{go.name} has no Jinja twin"
        converted = tmp_path / f"{go.stem}.converted.j2"
        _convert(go, converted)
        for label, path in (("go", go), ("jinja", jinja), ("converted", converted)):
            dest = tmp_path / f"{go.stem}.{label}.out"
            args += ["-template", f"{path}:{dest}"]
            outputs[(go.stem, label)] = dest
    result = run_ctemplate(args, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    for go in go_templates:
        want = outputs[(go.stem, "jinja")].read_text()
        assert outputs[(go.stem, "go")].read_text() == want, go.name
        assert outputs[(go.stem, "converted")].read_text() == want, go.name
        if with_instances:
            assert "10.0.0.11" in want or "DATABASE_URL" in want

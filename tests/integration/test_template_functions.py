"""Every Consul data function and the local functions against a real Consul agent.

The data is seeded once for the module (unique names, so other tests' services and keys do not
show), and each test renders with ``ctemplate -once`` and compares the exact output.
"""

from __future__ import annotations

import base64
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from ctemplate_proc import Daemon, read, run_ctemplate, wait_for

U = uuid.uuid4().hex[:6]
WEB = f"web-{U}"
NATIVE = f"native-{U}"
PREFIX = f"tf-{U}"


def _check(check_id: str, status: str, service_id: str) -> dict[str, str]:
    return {"CheckID": check_id, "Name": check_id, "Status": status, "ServiceID": service_id}


@pytest.fixture(scope="module")
def seeded(consul):
    """Instances of WEB: four external nodes in every check state plus one on the agent's own
    node; a Connect-native service; a nested KV tree."""
    externals: list[tuple[str, str, dict[str, Any]]] = [
        # node, address, service registration
        (
            f"n1-{U}",
            "10.0.1.1",
            dict(
                service_id="web-1",
                port=8001,
                tags=["prod", "v1"],
                meta={"version": "1", "zone": "eu-west"},
                node_meta={"rack": "r1"},
                checks=[_check("c1", "passing", "web-1")],
            ),
        ),
        (
            f"n2-{U}",
            "10.0.1.2",
            dict(
                service_id="web-2",
                port=8002,
                tags=["canary", "prod"],
                meta={"version": "2", "zone": "us/east"},
                service_address="192.168.1.2",
                checks=[_check("c2", "warning", "web-2")],
            ),
        ),
        (
            f"n3-{U}",
            "10.0.1.3",
            dict(
                service_id="web-3",
                port=8003,
                tags=["prod"],
                checks=[_check("c3", "critical", "web-3")],
            ),
        ),
        (
            f"n4-{U}",
            "10.0.1.4",
            dict(
                service_id="web-4",
                port=8004,
                tags=["prod"],
                checks=[
                    _check("c4", "passing", "web-4"),
                    _check("_service_maintenance:web-4", "critical", "web-4"),
                ],
            ),
        ),
    ]
    for node, address, svc in externals:
        consul.register_external(node, address, WEB, **svc)
    consul.register_service(
        WEB,
        id=f"web-local-{U}",
        port=9000,
        tags=["local", "prod"],
        meta={"version": "3"},
        check={"CheckID": f"local-{U}", "TTL": "300s", "Status": "passing"},
    )
    consul.request(
        "PUT",
        "/v1/agent/service/register",
        json={"Name": NATIVE, "ID": NATIVE, "Port": 7000, "Connect": {"Native": True}},
    ).raise_for_status()
    kv = {
        f"{PREFIX}/app/name": "demo",
        f"{PREFIX}/app/port": "8080",
        f"{PREFIX}/app/db/host": "db.local",
        f"{PREFIX}/app/db/user": "admin",
        f"{PREFIX}/app/folder/": "",
        f"{PREFIX}/app/empty": "",
        f"{PREFIX}/json": '{"servers": ["a", "b"], "tls": true}',
    }
    consul.txn(
        [
            {"KV": {"Verb": "set", "Key": k, "Value": base64.b64encode(v.encode()).decode()}}
            for k, v in kv.items()
        ]
    )
    yield consul
    for node, _, _ in externals:
        consul.deregister_external(node)
    consul.deregister_service(f"web-local-{U}")
    consul.deregister_service(NATIVE)
    consul.delete_kv(PREFIX, recurse=True)


def fill(template: str, **more: str) -> str:
    """The template with its placeholders (``%U%``, ``%WEB%``, ``%NATIVE%``, ``%P%``) filled."""
    values = {"U": U, "WEB": WEB, "NATIVE": NATIVE, "P": PREFIX, **more}
    for name, value in values.items():
        template = template.replace(f"%{name}%", value)
    return template


def render_once(consul, tmp_path: Path, template: str, **more: str) -> str:
    src = tmp_path / "t.j2"
    src.write_text(fill(template, **more))
    dest = tmp_path / "out"
    proc = run_ctemplate(["-once", "-consul-addr", consul.http_addr, "-template", f"{src}:{dest}"])
    assert proc.returncode == 0, proc.stderr
    return dest.read_text()


def fail_once(consul, tmp_path: Path, template: str) -> str:
    """Run -once on a template that must fail; return the error line (without the timestamp)."""
    src = tmp_path / "t.j2"
    src.write_text(fill(template))
    dest = tmp_path / "out"
    proc = run_ctemplate(["-once", "-consul-addr", consul.http_addr, "-template", f"{src}:{dest}"])
    assert proc.returncode == 14, proc.stderr
    assert not dest.exists()
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    errors = [ln.split(" [ERR] ", 1)[1] for ln in lines if "[ERR]" in ln]
    errors += [ln for ln in lines if ln.startswith("ctemplate: error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0].replace(str(tmp_path), "<tmp>")


SERVICE_TEMPLATE = """\
{% for s in service("%WEB%") %}
passing {{ s.Node }} {{ s.ID }} {{ s.Address }}:{{ s.Port }} {{ s.Tags | join(",") }}
{% endfor %}
{% for s in service("%WEB%|any") %}
any {{ s.ID }} {{ s.Status }} {{ s.NodeAddress }} {{ s.Checks | length }}
{% endfor %}
warning,critical: {{ service("%WEB%", "warning", "critical") | map(attribute="ID") | join(" ") }}
maintenance: {{ service("%WEB%|maintenance") | map(attribute="ID") | join(" ") }}
tag canary: {{ service("canary.%WEB%|any") | map(attribute="ID") | join(" ") }}
@dc1: {{ service("prod.%WEB%@dc1") | map(attribute="ID") | join(" ") }}
~_agent: {{ service("%WEB%~_agent") | map(attribute="ID") | sort | join(" ") }}
{% set first = service("%WEB%|any")[1] %}
meta: {{ first.ServiceMeta.zone }} {{ first.NodeMeta.rack }}
missing meta key: [{{ first.ServiceMeta.nosuch }}]
"""


def test_service_filters_fields_and_sorting(seeded, tmp_path):
    out = render_once(seeded, tmp_path, SERVICE_TEMPLATE)
    agent = "ctemplate-test"
    assert out == (
        f"passing {agent} web-local-{U} 127.0.0.1:9000 local,prod\n"
        f"passing n1-{U} web-1 10.0.1.1:8001 prod,v1\n"
        f"any web-local-{U} passing 127.0.0.1 2\n"
        "any web-1 passing 10.0.1.1 1\n"
        "any web-2 warning 10.0.1.2 1\n"
        "any web-3 critical 10.0.1.3 1\n"
        "any web-4 maintenance 10.0.1.4 2\n"
        "warning,critical: web-2 web-3\n"
        "maintenance: web-4\n"
        "tag canary: web-2\n"
        f"@dc1: web-local-{U} web-1\n"
        f"~_agent: web-1 web-local-{U}\n"
        "meta: eu-west r1\n"
        "missing meta key: []\n"
    )


GROUPING_TEMPLATE = """\
{% for tag, list in service("%WEB%|any") | byTag | items %}
{{ tag }}: {{ list | map(attribute="ID") | join(" ") }}
{% endfor %}
{% for group, list in service("%WEB%|any") | byMeta("version|int,zone") | items %}
{{ group }}: {{ list | map(attribute="ID") | join(" ") }}
{% endfor %}
{{ service("%WEB%|any") | map(attribute="Port") | list | toJSON }}
"""


def test_grouping_helpers_on_services(seeded, tmp_path):
    assert render_once(seeded, tmp_path, GROUPING_TEMPLATE) == (
        "canary: web-2\n"
        f"local: web-local-{U}\n"
        f"prod: web-local-{U} web-1 web-2 web-3 web-4\n"
        "v1: web-1\n"
        "00000__no_zone_: web-3 web-4\n"
        "00001_eu-west: web-1\n"
        "00002_us_east: web-2\n"
        f"00003__no_zone_: web-local-{U}\n"
        "[9000,8001,8002,8003,8004]\n"
    )


CATALOG_TEMPLATE = """\
{% for s in connect("%NATIVE%") %}
connect {{ s.Name }}:{{ s.Port }} {{ s.Status }}
{% endfor %}
{% for s in services() if s.Name.endswith("%U%") %}
service {{ s.Name }} [{{ s.Tags | join(",") }}]
{% endfor %}
{% for n in nodes() if n.Node.endswith("%U%") %}
node {{ n.Node }} {{ n.Address }} {{ n.Datacenter }} {{ n.Meta | toJSON }}
{% endfor %}
near: {{ nodes("~_agent") | length == nodes() | length }}
{% set local = node() %}
local node: {{ local.Node.Node }} {{ local.Node.Address }}
{% for s in local.Services if s.ID.endswith("%U%") %}
local service {{ s.ID }} {{ s.Service }} {{ s.Port }} [{{ s.Address }}] {{ s.Tags | join(",") }}
{% endfor %}
n2: {{ node("n2-%U%").Node.Address }} {{ node("n2-%U%@dc1").Services[0].Address }}
unknown: {{ node("nosuch-%U%") }}
datacenters: {{ datacenters() | join(",") }} {{ datacenters(true) | join(",") }}
"""


def test_connect_and_catalog_functions(seeded, tmp_path):
    assert render_once(seeded, tmp_path, CATALOG_TEMPLATE) == (
        f"connect {NATIVE}:7000 passing\n"
        f"service {NATIVE} []\n"
        f"service {WEB} [canary,local,prod,v1]\n"
        f'node n1-{U} 10.0.1.1 dc1 {{"rack":"r1"}}\n'
        f"node n2-{U} 10.0.1.2 dc1 {{}}\n"
        f"node n3-{U} 10.0.1.3 dc1 {{}}\n"
        f"node n4-{U} 10.0.1.4 dc1 {{}}\n"
        "near: True\n"
        "local node: ctemplate-test 127.0.0.1\n"
        f"local service {NATIVE} {NATIVE} 7000 [] \n"
        f"local service web-local-{U} {WEB} 9000 [] local,prod\n"
        "n2: 10.0.1.2 192.168.1.2\n"
        "unknown: None\n"
        "datacenters: dc1 dc1\n"
    )


KV_TEMPLATE = """\
key: {{ key("%P%/app/name") }} {{ key("/%P%/app/port@dc1") | parseInt | add(1) }}
exists: {{ keyExists("%P%/app/name") }} {{ keyExists("%P%/nosuch") }}
default: {{ keyOrDefault("%P%/nosuch", "dflt") }} {{ keyOrDefault("%P%/app/empty", "was-empty") }}
{% for p in ls("%P%/app") %}
ls {{ p.Key }}={{ p.Value }}
{% endfor %}
{% for p in tree("%P%/app/") %}
tree {{ p.Key }}={{ p.Value }} ({{ p.Path }})
{% endfor %}
safeLs: {{ safeLs("%P%/app/db/") | map(attribute="Key") | join(",") }}
safeTree: {{ safeTree("%P%/app/db") | map(attribute="Key") | join(",") }}
{% for top, pairs in tree("%P%/app") | byKey | items %}
byKey {{ top }}: {{ pairs | join(",") }}
{% endfor %}
explode: {{ (tree("%P%/app") | explode).db.user }} {{ tree("%P%/app") | explode | toJSON }}
json: {{ (key("%P%/json") | parseJSON).servers | join("+") }}
"""


def test_kv_functions(seeded, tmp_path):
    p = PREFIX
    assert render_once(seeded, tmp_path, KV_TEMPLATE) == (
        "key: demo 8081\n"
        "exists: True False\n"
        "default: dflt was-empty\n"
        "ls empty=\n"
        "ls name=demo\n"
        "ls port=8080\n"
        f"tree db/host=db.local ({p}/app/db/host)\n"
        f"tree db/user=admin ({p}/app/db/user)\n"
        f"tree empty= ({p}/app/empty)\n"
        f"tree name=demo ({p}/app/name)\n"
        f"tree port=8080 ({p}/app/port)\n"
        "safeLs: host,user\n"
        "safeTree: host,user\n"
        "byKey db: host,user\n"
        'explode: admin {"db":{"host":"db.local","user":"admin"},"empty":"","name":"demo",'
        '"port":"8080"}\n'
        "json: a+b\n"
    )


CA_TEMPLATE = """\
{% for r in caRoots() %}
root {{ r.Active }} {{ r.Name }} {{ r.RootCertPEM.startswith("-----BEGIN CERTIFICATE-----") }}
{% endfor %}
{% set leaf = caLeaf("%WEB%") %}
leaf {{ leaf.Service }} {{ leaf.ServiceURI.endswith("/svc/%WEB%") }}
pem {{ leaf.CertPEM.startswith("-----BEGIN CERTIFICATE-----") }} {{ "KEY" in leaf.PrivateKeyPEM }}
valid {{ leaf.ValidBefore > leaf.ValidAfter }}
"""


def test_connect_ca_roots_and_leaf(seeded, tmp_path):
    assert render_once(seeded, tmp_path, CA_TEMPLATE) == (
        f"root True Consul CA Root Cert True\nleaf {WEB} True\npem True True\nvalid True\n"
    )


LOCAL_TEMPLATE = """\
file: {{ file("%TMP%/data.txt") | trim }}
env: {{ env("CT_TEST_VALUE") }} [{{ env("CT_UNSET_%U%") }}] {{ envOrDefault("CT_UNSET_%U%", "d") }}
plugin: {{ plugin("%PY%", "-c", "import sys; print(sys.argv[1:])", " a ", "", "b") }}
{% set now = timestamp() %}
timestamp: {{ timestamp("2006") | length }} {{ now | regexMatch("^\\\\d{4}-[0-9-]+T.*Z$") }}
{{ key("%P%/app/port") | writeToFile("%TMP%/side/effect.txt", "0640") }}
{% include "part.j2" %}
"""


def test_local_functions(seeded, tmp_path, monkeypatch):
    monkeypatch.setenv("CT_TEST_VALUE", "from-env")
    (tmp_path / "data.txt").write_text("from a file\n")
    (tmp_path / "part.j2").write_text("included {{ key('" + PREFIX + "/app/name') }}\n")
    out = render_once(seeded, tmp_path, LOCAL_TEMPLATE, TMP=str(tmp_path), PY=sys.executable)
    assert out == (
        "file: from a file\n"
        "env: from-env [] d\n"
        "plugin: ['a', 'b']\n"
        "timestamp: 4 True\n"
        "\n"
        "included demo\n"
    )
    written = tmp_path / "side" / "effect.txt"
    assert written.read_text() == "8080"
    assert oct(written.stat().st_mode & 0o777) == "0o640"


# --- errors: file:line, what is wrong, exit 14 with -once ------------------------------------


def test_error_texts(seeded, tmp_path):
    assert fail_once(seeded, tmp_path, 'ok\n{{ service("%WEB%")[0].Adress }}\n') == (
        "<tmp>/t.j2:2: HealthService has no attribute 'Adress' (did you mean 'Address'?); "
        "keeping the last good <tmp>/out"
    )
    assert fail_once(seeded, tmp_path, '\n\n{{ service("web@") }}') == (
        '<tmp>/t.j2:3: service("web@"): expected "[tag.]name[@dc][~near][|filter,...]"; '
        "keeping the last good <tmp>/out"
    )
    assert fail_once(seeded, tmp_path, "a\n{% for s in service('x') %}\n") == (
        "ctemplate: error: <tmp>/t.j2:2: syntax error: Unexpected end of template. Jinja was "
        "looking for the following tags: 'endfor' or 'else'. The innermost block that needs to "
        "be closed is 'for'."
    )


def test_denied_function_and_sandbox_from_hcl(seeded, tmp_path):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (sandbox / "link.txt").symlink_to(tmp_path / "secret.txt")

    def run(template: str) -> str:
        src = tmp_path / "t.j2"
        src.write_text(template)
        config = tmp_path / "ct.hcl"
        config.write_text(
            f'consul {{ address = "{seeded.http_addr}" }}\n'
            "template {\n"
            f'  source = "{src}"\n'
            f'  destination = "{tmp_path}/out"\n'
            '  function_denylist = ["plugin", "write*"]\n'
            f'  sandbox_path = "{sandbox}"\n'
            "}\n"
        )
        proc = run_ctemplate(["-once", "-config", str(config)])
        assert proc.returncode == 14, proc.stderr
        (line,) = [ln.split(" [ERR] ", 1)[1] for ln in proc.stderr.splitlines() if "[ERR]" in ln]
        return line.replace(str(tmp_path), "<tmp>")

    assert run('{{ key("' + PREFIX + '/app/name") }}\n{{ plugin("date") }}') == (
        "<tmp>/t.j2:2: plugin() is disabled by function_denylist (pattern 'plugin'); keeping "
        "the last good <tmp>/out"
    )
    assert run('{{ "x" | writeToFile("/tmp/x") }}') == (
        "<tmp>/t.j2:1: writeToFile() is disabled by function_denylist (pattern 'write*'); "
        "keeping the last good <tmp>/out"
    )
    assert run(f'{{{{ file("{sandbox}/link.txt") }}}}') == (
        '<tmp>/t.j2:1: file("<tmp>/sandbox/link.txt"): outside the sandbox <tmp>/sandbox (it '
        "resolves to <tmp>/secret.txt); sandbox_path allows only paths inside it; keeping the "
        "last good <tmp>/out"
    )
    assert run('{{ file("/etc/hostname") }}') == (
        '<tmp>/t.j2:1: file("/etc/hostname"): outside the sandbox <tmp>/sandbox; sandbox_path '
        "allows only paths inside it; keeping the last good <tmp>/out"
    )


# --- daemon mode --------------------------------------------------------------------------------


def test_daemon_keeps_last_good_output_and_follows_files(seeded, tmp_path):
    key = f"{PREFIX}/daemon/port"
    seeded.put_kv(key, "80")
    data = tmp_path / "data.txt"
    data.write_text("one")
    src = tmp_path / "t.j2"
    src.write_text(
        f'port {{{{ key("{key}") | parseInt }}}} file {{{{ file("{data}") }}}}'
        f' safe {{{{ safeLs("{PREFIX}/daemon-empty/") | length }}}}\n'
    )
    dest = tmp_path / "out"
    args = ["-consul-addr", seeded.http_addr, "-template", f"{src}:{dest}"]
    with Daemon(args) as daemon:
        # safeLs on an empty prefix: nothing is written until a key appears there.
        time.sleep(1.0)
        assert read(dest) is None, daemon.log()
        seeded.put_kv(f"{PREFIX}/daemon-empty/a", "x")
        wait_for(
            lambda: read(dest) == "port 80 file one safe 1\n", what="first render", log=daemon.log()
        )
        seeded.put_kv(key, "eighty")  # parseInt fails: logged, the last good file stays
        wait_for(
            lambda: "is not a whole number" in daemon.log(), what="the error", log=daemon.log()
        )
        line = next(ln for ln in daemon.log().splitlines() if "is not a whole number" in ln)
        assert line.endswith(
            f"{src}:1: parseInt: a string of 6 characters is not a whole number; keeping the "
            f"last good {dest}"
        )
        assert read(dest) == "port 80 file one safe 1\n"
        seeded.put_kv(key, "81")
        wait_for(
            lambda: read(dest) == "port 81 file one safe 1\n", what="recovery", log=daemon.log()
        )
        data.write_text("two")  # file() is watched (stat every 2s)
        wait_for(lambda: read(dest) == "port 81 file two safe 1\n", timeout=10, what="file change")
        assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    seeded.delete_kv(f"{PREFIX}/daemon", recurse=True)
    seeded.delete_kv(f"{PREFIX}/daemon-empty", recurse=True)

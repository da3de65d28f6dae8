"""Many dependencies within the connection budget, against a real agent.

Past ``consul.max_connections - 4`` queries, KV queries are answered by one recursive read per
prefix and service queries by a health sentinel; these tests check that files still follow
Consul within seconds, and that ctemplate never holds more connections than allowed.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request

from connections import PeakConnections
from ctemplate_proc import Daemon, read, run_ctemplate, wait_for

from ctemplate.consul.answers import AnswerDecoder


def _seed_keys(consul, prefix: str, n: int, value: str = "v0") -> None:
    ops = [
        {
            "KV": {
                "Verb": "set",
                "Key": f"{prefix}{i}",
                "Value": base64.b64encode(f"{value}-{i}".encode()).decode(),
            }
        }
        for i in range(n)
    ]
    for start in range(0, n, 64):
        consul.txn(ops[start : start + 64])


def _check(sid: str, status: str) -> dict[str, str]:
    return {"CheckID": f"{sid}-check", "Name": "http", "Status": status, "ServiceID": sid}


def test_three_hundred_keys_within_the_budget(consul, unique, tmp_path):
    """Promise: 300 `key` dependencies render and react, never above max_connections."""
    prefix = f"{unique}/keys/"
    _seed_keys(consul, prefix, 300)
    src = tmp_path / "t.j2"
    src.write_text(
        "{% for i in range(300) %}\n{{ i }}={{ key('" + prefix + "' ~ i) }}\n{% endfor %}\n"
    )
    dest = tmp_path / "out"
    config = tmp_path / "ct.hcl"
    config.write_text(
        f'consul {{\n  address = "{consul.http_addr}"\n  max_connections = 8\n}}\n'
        f'template {{\n  source = "{src}"\n  destination = "{dest}"\n}}\n'
    )
    result = run_ctemplate(["-config", str(config), "-once"])
    assert result.returncode == 0, result.stderr
    assert read(dest) == "".join(f"{i}=v0-{i}\n" for i in range(300))

    dest.unlink()
    with Daemon(["-config", str(config), "-log-level", "debug"]) as ct:
        with PeakConnections(ct.pid, consul.http_port) as conns:
            wait_for(lambda: read(dest) is not None, what="first render", log=ct.log())
            for i in (0, 150, 299):
                consul.put_kv(f"{prefix}{i}", f"changed-{i}")
                took = wait_for(
                    lambda i=i: f"{i}=changed-{i}\n" in (read(dest) or ""),
                    timeout=5,
                    what=f"key {i} changed",
                    log=ct.log(),
                )
                print(f"key {i}: change -> file {took * 1000:.0f} ms")
            # A deleted key makes the template wait again; the file is kept as it was.
            consul.delete_kv(f"{prefix}7")
            time.sleep(1)
            assert "7=v0-7\n" in (read(dest) or "")
            consul.put_kv(f"{prefix}7", "back")
            wait_for(lambda: "7=back\n" in (read(dest) or ""), timeout=5, what="key 7 back")
        assert "1 KV prefixes" in ct.log()
    assert 0 < conns.peak <= 8, conns.peak


def test_twelve_hundred_keys_through_one_prefix_read(consul, unique, tmp_path):
    """Promise: past 1,000 `key` dependencies answered by one recursive read (only what changed
    is decoded again), the file follows every change exactly: a value rewritten with the same
    bytes changes nothing, a value that is not UTF-8 renders with U+FFFD, a deleted key holds
    the file until it is back, and keyOrDefault() on a key that key() also reads follows it."""
    n = 1200
    prefix = f"{unique}/many/"
    _seed_keys(consul, prefix, n)
    src = tmp_path / "t.j2"
    src.write_text(
        "{% for i in range(" + str(n) + ") %}\n{{ i }}={{ key('" + prefix + "' ~ i) }}\n"
        "{% endfor %}\n"
        "d={{ keyOrDefault('" + prefix + "1100', 'none') }}\n"
        "x={{ keyOrDefault('" + prefix + "extra', 'none') }}\n"
    )
    dest = tmp_path / "out"
    config = tmp_path / "ct.hcl"
    config.write_text(
        f'consul {{\n  address = "{consul.http_addr}"\n  max_connections = 8\n}}\n'
        f'template {{\n  source = "{src}"\n  destination = "{dest}"\n}}\n'
    )
    values = {i: f"v0-{i}" for i in range(n)}
    extra = "none"

    def expected() -> str:
        lines = "".join(f"{i}={values[i]}\n" for i in range(n))
        return f"{lines}d={values[1100]}\nx={extra}\n"

    with Daemon(["-config", str(config), "-log-level", "debug"]) as ct:

        def follows(what: str) -> None:
            wait_for(lambda: read(dest) == expected(), timeout=10, what=what, log=ct.log())

        follows("first render")
        consul.put_kv(f"{prefix}1100", "changed")
        values[1100] = "changed"
        follows("key 1100 changed (key() and keyOrDefault())")
        # The same bytes again (a new ModifyIndex), then another key: only that one moves.
        consul.put_kv(f"{prefix}5", "v0-5")
        consul.put_kv(f"{prefix}1150", "after")
        values[1150] = "after"
        follows("key 1150 changed")
        consul.put_kv(f"{prefix}7", b"caf\xe9")
        values[7] = "caf\ufffd"
        follows("a value that is not UTF-8")
        consul.put_kv(f"{prefix}7", "café")
        values[7] = "café"
        follows("the value fixed")
        # A deleted key makes the template wait: the file stays as it was until it is back.
        consul.delete_kv(f"{prefix}1199")
        time.sleep(1)
        assert read(dest) == expected()
        consul.put_kv(f"{prefix}1199", "back")
        values[1199] = "back"
        follows("key 1199 back")
        consul.put_kv(f"{prefix}extra", "here")
        extra = "here"
        follows("a key keyOrDefault() waited for")
        assert "1 KV prefixes" in ct.log()


def test_a_prefix_answer_is_decoded_reusing_the_keys_that_did_not_change(consul, unique):
    """Promise: Consul 1.8.7 indents its answers as consul/answers.py expects, so a change to
    one of a prefix's keys decodes that key's entry alone, and the result is json.loads'."""
    prefix = f"{unique}/reuse/"
    _seed_keys(consul, prefix, 100)
    consul.put_kv(prefix + 'odd},{"Key": "x"}', "}\n    },\n    {\n")
    url = f"http://{consul.http_addr}/v1/kv/{prefix}?recurse&stale"

    def body() -> bytes:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.read()

    decode = AnswerDecoder()
    first = body()
    assert decode(first) == json.loads(first)
    consul.put_kv(f"{prefix}42", "changed")
    second = body()
    entries = decode(second)
    assert entries == json.loads(second)
    assert decode.reused == 100  # of 101 entries, all but key 42
    assert [base64.b64decode(e["Value"]) for e in entries if e["Key"] == f"{prefix}42"] == [
        b"changed"
    ]


def test_service_fan_out_through_the_health_sentinel(consul, unique, tmp_path):
    """Promise: `services()` -> `service(name)` over many services renders and follows check
    changes, new instances and node failures, within the budget."""
    names = [f"{unique}-s{i:02d}" for i in range(40)]
    for i, name in enumerate(names):
        consul.register_external(
            f"{unique}-node{i % 4}",
            f"127.0.2.{i % 4 + 1}",
            name,
            service_id=name,
            port=9000 + i,
            tags=[unique],
            checks=[_check(name, "passing")],
        )
    src = tmp_path / "t.j2"
    src.write_text(
        "{% for s in services() if '" + unique + "' in s.Tags %}\n"
        "{% for i in service(s.Name) %}\n"
        "{{ i.Name }} {{ i.Address }}:{{ i.Port }}\n"
        "{% endfor %}\n"
        "{% endfor %}\n"
    )
    dest = tmp_path / "out"
    config = tmp_path / "ct.hcl"
    config.write_text(
        f'consul {{\n  address = "{consul.http_addr}"\n  max_connections = 8\n}}\n'
        f'template {{\n  source = "{src}"\n  destination = "{dest}"\n}}\n'
    )

    def line(i: int, node: int | None = None) -> str:
        return f"{names[i]} 127.0.2.{(i % 4 if node is None else node) + 1}:{9000 + i}\n"

    everything = "".join(line(i) for i in range(40))
    result = run_ctemplate(["-config", str(config), "-once"])
    assert result.returncode == 0, result.stderr
    assert read(dest) == everything

    dest.unlink()
    with Daemon(["-config", str(config), "-log-level", "debug"]) as ct:
        with PeakConnections(ct.pid, consul.http_port) as conns:
            wait_for(lambda: read(dest) == everything, what="first render", log=ct.log())
            assert "1 health sentinels" in ct.log()

            # A service check fails: only that service is read again, and it drops out.
            consul.set_external_check(
                f"{unique}-node1",
                "127.0.2.2",
                f"{names[5]}-check",
                "critical",
                service_id=names[5],
            )
            without5 = "".join(line(i) for i in range(40) if i != 5)
            took = wait_for(
                lambda: read(dest) == without5, timeout=5, what="check critical", log=ct.log()
            )
            print(f"check critical -> file {took * 1000:.0f} ms")

            # A second instance with the same tags and no check: the service list does not
            # change, so the sentinel reads every member again.
            consul.register_external(
                f"{unique}-node3",
                "127.0.2.4",
                names[0],
                service_id=f"{names[0]}-b",
                port=9000,
                tags=[unique],
            )
            with_b = without5.replace(line(0), line(0) + line(0, node=3))
            wait_for(lambda: read(dest) == with_b, timeout=5, what="new instance", log=ct.log())

            # A node check fails: every service on that node drops out.
            consul.set_external_check(f"{unique}-node2", "127.0.2.3", "serfHealth", "critical")
            node2_gone = "".join(
                line(i) + (line(0, node=3) if i == 0 else "")
                for i in range(40)
                if i != 5 and i % 4 != 2
            )
            wait_for(lambda: read(dest) == node2_gone, timeout=5, what="node down", log=ct.log())
        assert 0 < conns.peak <= 8, conns.peak
    for i in range(4):
        consul.deregister_external(f"{unique}-node{i}")


def test_only_templates_whose_inputs_changed_are_rendered(consul, unique, tmp_path):
    """Promise: a change re-renders the templates that use it, and no other."""
    consul.put_kv(f"{unique}/a", "1")
    consul.put_kv(f"{unique}/b", "1")
    args = ["-consul-addr", consul.http_addr, "-log-level", "debug"]
    for name in ("a", "b"):
        (tmp_path / f"{name}.j2").write_text(f'{{{{ key("{unique}/{name}") }}}}\n')
        args += ["-template", f"{tmp_path / name}.j2:{tmp_path / name}.out"]
    with Daemon(args) as ct:
        wait_for(lambda: read(tmp_path / "b.out") == "1\n", what="first render", log=ct.log())
        wait_for(lambda: read(tmp_path / "a.out") == "1\n", what="first render", log=ct.log())
        before = ct.log().count("b.out: unchanged")
        consul.put_kv(f"{unique}/a", "2")
        wait_for(lambda: read(tmp_path / "a.out") == "2\n", what="a changed", log=ct.log())
        time.sleep(0.3)
        # b was not even executed again: no "unchanged" line for it.
        assert ct.log().count("b.out: unchanged") == before


def test_health_sentinel_follows_every_field_a_template_reads(consul, unique, tmp_path):
    """Promise: nothing silently stale. With 32 service queries under the default budget of 32
    connections the health sentinel serves them, and a change to any field a template reads
    (a node's Meta, a service's Meta, a check's Output or Notes) is rendered: the sentinel
    compares every field of a node and each check's ModifyIndex, not only names, addresses and
    statuses."""
    names = [f"{unique}-m{i:02d}" for i in range(32)]

    def register(i: int, version: str = "1") -> None:
        consul.register_external(
            f"{unique}-node{i % 2}",
            f"127.0.3.{i % 2 + 1}",
            names[i],
            service_id=names[i],
            port=9100 + i,
            meta={"version": version},
            node_meta={"rack": "r1"},
            checks=[_check(names[i], "passing")],
        )

    for i in range(32):
        register(i)
    src = tmp_path / "t.j2"
    src.write_text(
        "".join(
            f'{{% for i in service("{n}") %}}{{{{ i.Name }}}} rack={{{{ i.NodeMeta["rack"] }}}}'
            f' v={{{{ i.ServiceMeta["version"] }}}}'
            f" out={{{{ i.Checks[0].Output }}}} notes={{{{ i.Checks[0].Notes }}}}\n"
            "{% endfor %}"
            for n in names
        )
    )
    dest = tmp_path / "out"

    def lines(rack0: str = "r1", version5: str = "1", out7: str = "", notes9: str = "") -> str:
        return "".join(
            f"{n} rack={rack0 if i % 2 == 0 else 'r1'} v={version5 if i == 5 else '1'}"
            f" out={out7 if i == 7 else ''} notes={notes9 if i == 9 else ''}\n"
            for i, n in enumerate(names)
        )

    args = ["-consul-addr", consul.http_addr, "-template", f"{src}:{dest}", "-log-level", "debug"]
    with Daemon(args) as ct:
        wait_for(lambda: read(dest) == lines(), what="first render", log=ct.log())
        assert "1 health sentinels" in ct.log(), ct.log()

        # Only the node's Meta changes (a catalog registration of the node alone).
        consul.request(
            "PUT",
            "/v1/catalog/register",
            json={
                "Node": f"{unique}-node0",
                "Address": "127.0.3.1",
                "NodeMeta": {"rack": "r2"},
            },
        ).raise_for_status()
        wait_for(lambda: read(dest) == lines("r2"), what="node Meta", log=ct.log())

        register(5, version="2")  # only the service's Meta changes
        wait_for(lambda: read(dest) == lines("r2", "2"), what="service Meta", log=ct.log())

        # Only the check's Output changes (its status stays passing).
        consul.request(
            "PUT",
            "/v1/catalog/register",
            json={
                "Node": f"{unique}-node1",
                "Address": "127.0.3.2",
                "NodeMeta": {"rack": "r1"},
                "Check": {**_check(names[7], "passing"), "Output": "HTTP 200 OK"},
            },
        ).raise_for_status()
        wait_for(
            lambda: read(dest) == lines("r2", "2", "HTTP 200 OK"),
            what="check Output",
            log=ct.log(),
        )

        # Only the check's Notes change (status and output stay): its ModifyIndex moves.
        consul.request(
            "PUT",
            "/v1/catalog/register",
            json={
                "Node": f"{unique}-node1",
                "Address": "127.0.3.2",
                "NodeMeta": {"rack": "r1"},
                "Check": {**_check(names[9], "passing"), "Notes": "see the runbook"},
            },
        ).raise_for_status()
        wait_for(
            lambda: read(dest) == lines("r2", "2", "HTTP 200 OK", "see the runbook"),
            what="check Notes",
            log=ct.log(),
        )
    for i in range(2):
        consul.deregister_external(f"{unique}-node{i}")

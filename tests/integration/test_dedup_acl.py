"""De-duplication when the ACL token may not read the announcements (the agent's own default
token is the master token, so the harness can see it start; each instance sends its own).

Consul drops from ``/v1/event/list`` the events a token may not read, without an error, so a
follower whose token lacks ``event_prefix "ctemplate-dedup-" { policy = "read" }`` never hears
of a new version. It must still follow: it checks the data key once per ``block_query_wait``,
and after two versions found that way and never announced it says what to grant and follows the
data key with blocking reads from then on."""

from __future__ import annotations

from pathlib import Path

from ctemplate_proc import Daemon, read, wait_for

MASTER = "5e1f0c3a-0000-4000-8000-00000000a11e"
KEY = "dd-acl/app"

# Everything a follower needs except events.
NO_EVENTS = """
key_prefix "" { policy = "write" }
session_prefix "" { policy = "write" }
node_prefix "" { policy = "read" }
service_prefix "" { policy = "read" }
"""


def _token(agent, rules: str) -> str:
    headers = {"X-Consul-Token": MASTER}
    resp = agent.request(
        "PUT", "/v1/acl/policy", json={"Name": "no-events", "Rules": rules}, headers=headers
    )
    assert resp.status_code == 200, resp.text
    resp = agent.request(
        "PUT", "/v1/acl/token", json={"Policies": [{"Name": "no-events"}]}, headers=headers
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["SecretID"])


def _config(path: Path, agent, dest: Path) -> Path:
    path.write_text(
        f'consul {{\n  address = "{agent.http_addr}"\n}}\n'
        'deduplicate {\n  ttl = "10s"\n  block_query_wait = "3s"\n}\n'
        f"template {{\n  contents = \"v={{{{ key('{KEY}') }}}}\"\n"
        f'  destination = "{dest}"\n}}\n'
    )
    return path


def test_a_follower_that_may_not_read_events_still_follows_and_says_what_to_grant(
    consul_agent_factory, tmp_path: Path
) -> None:
    agent = consul_agent_factory(
        extra_args=[
            "-hcl",
            'acl { enabled = true default_policy = "deny" '
            f'tokens {{ master = "{MASTER}" agent = "{MASTER}" default = "{MASTER}" }} }}',
        ],
    )
    headers = {"X-Consul-Token": MASTER}
    agent.request("PUT", f"/v1/kv/{KEY}", content=b"1", headers=headers).raise_for_status()
    follower_token = _token(agent, NO_EVENTS)
    lead_out, follow_out = tmp_path / "lead.out", tmp_path / "follow.out"
    leader = Daemon(
        ["-config", str(_config(tmp_path / "lead.hcl", agent, lead_out)), "-log-level", "debug"],
        env={"CONSUL_HTTP_TOKEN": MASTER},
    )
    with leader:
        wait_for(lambda: read(lead_out) == "v=1", what="the leader's file", log=leader.log())
        wait_for(lambda: "leader: this instance reads" in leader.log(), what="leadership")
        follower = Daemon(
            ["-config", str(_config(tmp_path / "follow.hcl", agent, follow_out))],
            env={"CONSUL_HTTP_TOKEN": follower_token},
        )
        with follower:
            wait_for(
                lambda: read(follow_out) == "v=1", what="the follower's file", log=follower.log()
            )

            def change(v: str, within: float) -> None:
                agent.request("PUT", f"/v1/kv/{KEY}", content=v.encode(), headers=headers)
                wait_for(
                    lambda: read(follow_out) == f"v={v}",
                    timeout=within,
                    what=f"the follower's file at v={v} within {within}s",
                    log=follower.log(),
                )

            # Two versions it is never told of: each found by its check within ~3 s.
            for v in ("2", "3"):
                change(v, 15)
            wait_for(
                lambda: "no announcement reached this follower" in follower.log(),
                timeout=15,
                what="the warning",
                log=follower.log(),
            )
            warning = next(
                line for line in follower.log().splitlines() if "no announcement" in line
            )
            assert 'grant event_prefix "ctemplate-dedup-" { policy = "read" }' in warning
            # From now on it follows the data key itself: three changes in a row each arrive
            # at once (a check every 3 s could not keep up with all three).
            for v in ("4", "5", "6"):
                change(v, 1.5)
        assert "may not fire" not in leader.log()  # the leader's token may: it announced

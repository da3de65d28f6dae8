"""The example configurations in contrib/ load, and say what the docs say they say."""

from __future__ import annotations

from pathlib import Path

from ctemplate.config import Config, load_config
from ctemplate.config.flags import parse_flags

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"

# The workshop's consul-template.hcl (step 6), as printed there.
WORKSHOP_STEP6 = """\
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


def load(name: str) -> Config:
    return load_config(parse_flags(["-config", str(CONTRIB / name)]), {})


def test_workshop_old_is_the_workshops_file_with_the_jinja_template() -> None:
    lines = [
        line
        for line in (CONTRIB / "workshop-old.hcl").read_text().splitlines(keepends=True)
        if not line.startswith("#")
    ]
    expected = WORKSHOP_STEP6.replace(
        "/usr/local/sample.conf.ctmpl", "/etc/ctemplate/templates/nginx-upstream.conf.j2"
    )
    assert "".join(lines) == expected

    config = load("workshop-old.hcl")
    assert config.consul.address == "127.0.0.1:8500"
    assert config.consul.retry.backoff == 10.0
    assert config.max_stale == 600.0
    assert config.pid_file == "/var/run/consul-template.pid"
    (template,) = config.templates
    assert template.source == "/etc/ctemplate/templates/nginx-upstream.conf.j2"
    assert template.destination == "/etc/nginx/conf.d/sample.conf"
    assert template.command == "systemctl reload nginx"
    assert template.check_command is None


def test_workshop_current_form() -> None:
    config = load("workshop.hcl")
    assert config.consul.address == "127.0.0.1:8500"
    retry = config.consul.retry
    assert (retry.enabled, retry.attempts, retry.backoff, retry.max_backoff) == (
        True,
        0,
        0.25,
        10.0,
    )
    assert config.max_stale == 600.0
    assert config.log_level == "info"
    assert config.status_address == "127.0.0.1:9110"
    (template,) = config.templates
    assert template.source == "/etc/ctemplate/templates/nginx-upstream.conf.j2"
    assert template.destination == "/etc/nginx/ctemplate/backend_apps.conf"
    assert template.perms == 0o644
    assert template.check_command == (
        "/usr/local/lib/ctemplate/nginx-check-staged /etc/nginx/nginx.conf"
    )
    assert template.command == "systemctl reload nginx"
    assert template.command_timeout == 30.0
    assert template.wait is None


def test_unit_and_site_agree_with_the_config() -> None:
    unit = (CONTRIB / "ctemplate.service").read_text()
    assert "ExecStart=/usr/local/bin/ctemplate -config /etc/ctemplate/ctemplate.hcl\n" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID\n" in unit
    assert "KillSignal=SIGTERM\n" in unit
    assert "Restart=on-failure\n" in unit
    assert "ReadWritePaths=/etc/nginx\n" in unit
    site = (CONTRIB / "nginx-site.conf").read_text()
    (template,) = load("workshop.hcl").templates
    directory = str(Path(template.destination).parent)
    assert f"include {directory}/*.conf;\n" in site

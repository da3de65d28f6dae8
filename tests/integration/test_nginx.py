"""ctemplate in front of a real nginx: the Consul workshop's steps 6-7 as tests.

Real Consul (the session agent), three real HTTP backends on loopback (contrib/backend.py)
with Consul HTTP health checks, ctemplate running as a daemon with
templates/nginx-upstream.conf.j2, contrib/nginx-check-staged as its check_command and
``nginx -s reload`` as its command, and a real nginx with a private configuration.

nginx comes from scripts/get-nginx. A missing nginx fails these tests (in CI and elsewhere);
they are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from consul_harness import REPO_ROOT, ConsulAgent, free_port
from ctemplate_proc import Daemon, run_ctemplate, wait_for
from replace_watch import ReplaceWatch

TEMPLATE = REPO_ROOT / "templates" / "nginx-upstream.conf.j2"
CHECK = REPO_ROOT / "contrib" / "nginx-check-staged"
BACKEND = REPO_ROOT / "contrib" / "backend.py"
GET_NGINX = REPO_ROOT / "scripts" / "get-nginx"


# --- nginx ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """nginx from scripts/get-nginx (PATH, /usr/sbin, or apt-get install nginx-light as root)."""
    try:
        proc = subprocess.run(
            ["bash", str(GET_NGINX)], capture_output=True, text=True, timeout=300, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/get-nginx did not finish within 300s", pytrace=False)
    path = proc.stdout.strip()
    if proc.returncode != 0 or not path:
        ci = " (CI=true)" if os.environ.get("CI") == "true" else ""
        pytest.fail(
            f"these tests need nginx and scripts/get-nginx could not provide it{ci}; install "
            f"nginx (apt-get install nginx-light) or run as root:\n{proc.stderr.strip()}",
            pytrace=False,
        )
    return path


NGINX_CONF = (REPO_ROOT / "contrib" / "nginx-loopback.conf").read_text()


class Nginx:
    """nginx in the foreground (daemon off) with everything under ``prefix``."""

    def __init__(self, binary: str, prefix: Path) -> None:
        self.binary = binary
        self.prefix = prefix
        self.port = free_port()
        (prefix / "conf.d").mkdir(parents=True)
        (prefix / "tmp").mkdir()
        self.conf.write_text(NGINX_CONF.replace("@PREFIX@", str(prefix)))
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(timeout=3.0, limits=httpx.Limits(max_keepalive_connections=0))

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def destination(self) -> Path:
        return self.prefix / "conf.d" / "backend_apps.conf"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def args(self) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf)]

    def start(self) -> None:
        with open(self.prefix / "nginx.out", "ab") as out:
            self.proc = subprocess.Popen(
                self.args(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        pid_file = self.prefix / "nginx.pid"

        def started() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return int(pid_file.read_text()) == self.proc.pid
            except (OSError, ValueError):
                return False

        wait_for(started, 10, "nginx to start")

    def log(self) -> str:
        text = ""
        for name in ("nginx.out", "error.log"):
            path = self.prefix / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def get(self) -> tuple[str, str]:
        """(``backend-N``, or ``error: ...``; the answering worker's pid)."""
        try:
            r = self.http.get(self.url, headers={"Connection": "close"})
        except httpx.HTTPError as exc:
            return f"error: {type(exc).__name__}", ""
        match = re.fullmatch(r"OK: response from (\S+)\n", r.text)
        if r.status_code == 200 and match:
            return match.group(1), r.headers.get("x-nginx-worker", "")
        return f"error: HTTP {r.status_code} {r.text.strip()[:60]}", ""

    def stop(self) -> None:
        self.http.close()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Workers of a master that did not get to stop them.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


# --- backends -------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    port: int = 0
    proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(BACKEND), "--name", self.name, "--port", str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening "), f"{self.name} did not start: {line!r}"
        self.port = int(line.rsplit(":", 1)[1])

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


# --- the whole set-up -----------------------------------------------------------------------


def alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Lab:
    consul: ConsulAgent
    service: str
    nginx: Nginx
    backends: list[Backend]
    daemon: Daemon | None = None
    workers: set[str] = field(default_factory=set)

    @property
    def query(self) -> str:
        return f"production.{self.service}"

    def register(self, backend: Backend) -> None:
        url = f"http://127.0.0.1:{backend.port}/"
        self.consul.register_service(
            self.service,
            id=f"{self.service}-{backend.name}",
            port=backend.port,
            address="127.0.0.1",
            tags=("production",),
            check={
                "CheckID": f"{self.service}-{backend.name}-http",
                "Name": f"GET {url}",
                "HTTP": url,
                "Interval": "1s",
                "Timeout": "1s",
            },
        )

    def check_status(self, backend: Backend) -> str:
        for check in self.consul.request("GET", f"/v1/health/checks/{self.service}").json():
            if check["ServiceID"] == f"{self.service}-{backend.name}":
                return str(check["Status"])
        return "missing"

    def write_config(self, path: Path, template: Path) -> None:
        def hcl_list(args: list[str]) -> str:
            return "[" + ", ".join(f'"{a}"' for a in args) + "]"

        check = [str(CHECK), str(self.nginx.conf), "--", "-p", str(self.nginx.prefix)]
        path.write_text(
            f"""\
consul {{
  address = "{self.consul.http_addr}"
  retry {{ backoff = "100ms" max_backoff = "1s" }}
}}
log_level = "info"
template {{
  source        = "{template}"
  destination   = "{self.nginx.destination}"
  check_command = {hcl_list(check)}
  command       = {hcl_list([*self.nginx.args(), "-s", "reload"])}
  command_timeout = "15s"
}}
"""
        )

    def start_ctemplate(self, config: Path) -> Daemon:
        env = {"APP_SERVICE": self.query, "NGINX_LISTEN": f"127.0.0.1:{self.nginx.port}"}
        self.daemon = Daemon(["-config", str(config)], env=env)
        try:
            wait_for(self.nginx.destination.exists, 15, "the first render")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()}") from None
        return self.daemon

    def log(self) -> str:
        return (self.daemon.log() if self.daemon else "") + "\n--- nginx:\n" + self.nginx.log()

    def traffic(self, count: int) -> Counter[str]:
        answers: Counter[str] = Counter()
        for _ in range(count):
            answer, worker = self.nginx.get()
            answers[answer] += 1
            if worker:
                self.workers.add(worker)
        return answers

    def follow(
        self, backend: Backend, action: Callable[[], None], *, present: bool
    ) -> tuple[dict[str, float], Counter[str]]:
        """Do ``action`` (kill or start ``backend``), then poll Consul, the upstream file and
        nginx until the change reached all of them.

        Returns when each was seen, in seconds after the action, and nginx's answers
        meanwhile: "check" Consul's check status, "file" the upstream file replaced (to the
        millisecond), "nginx" the first answer from a worker started after that, "old gone"
        the moment the last worker with the old configuration exited (nginx's master lets
        old workers accept connections for another 100 ms).
        """
        want = "passing" if present else "critical"
        line = f"127.0.0.1:{backend.port};"
        seen: dict[str, float] = {}
        answers: Counter[str] = Counter()
        old_workers = set(self.workers)
        with ReplaceWatch(self.nginx.destination) as replaced:
            started = time.monotonic()
            action()
            while len(seen) < 4:
                if "check" not in seen and self.check_status(backend) == want:
                    seen["check"] = time.monotonic() - started
                if "file" not in seen and (line in self.nginx.destination.read_text()) == present:
                    seen["file"] = replaced.last() - started
                answer, worker = self.nginx.get()
                answers[answer] += 1
                if worker:
                    self.workers.add(worker)
                    if "file" in seen and "nginx" not in seen and worker not in old_workers:
                        seen["nginx"] = time.monotonic() - started
                old_gone = not any(map(alive, old_workers))
                if "nginx" in seen and "old gone" not in seen and old_gone:
                    seen["old gone"] = time.monotonic() - started
                if time.monotonic() - started > 20:
                    raise AssertionError(
                        f"{backend.name} {want}: only saw {seen} after 20s\n{self.log()}"
                    )
                time.sleep(0.001)
        return seen, answers


@pytest.fixture
def lab(consul: ConsulAgent, unique: str, nginx_binary: str, tmp_path: Path) -> Iterator[Lab]:
    """Three passing backends of ``application-<unique>`` in Consul, and nginx (not serving
    anything until ctemplate writes conf.d/backend_apps.conf)."""
    nginx = Nginx(nginx_binary, tmp_path / "nginx")
    lab = Lab(consul, f"application-{unique}", nginx, [Backend(f"backend-{i}") for i in (1, 2, 3)])
    try:
        for backend in lab.backends:
            backend.start()
            lab.register(backend)
        nginx.start()
        wait_for(
            lambda: len(consul.health_service(lab.service, passing=True)) == 3,
            15,
            "three passing backends",
        )
        yield lab
    finally:
        if lab.daemon is not None:
            lab.daemon.stop()
            lab.daemon.log_path.unlink(missing_ok=True)
        nginx.stop()
        for backend in lab.backends:
            backend.stop()
            consul.deregister_service(f"{lab.service}-{backend.name}")


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Figures worth seeing in every run, also without -s."""
    with capsys.disabled():
        print(f"\n[nginx latency] {line}", flush=True)


# --- tests ----------------------------------------------------------------------------------


def assert_round_robin(answers: Counter[str], backends: set[str]) -> None:
    """Only ``backends`` answered, equally often (round robin)."""
    assert set(answers) == backends, answers
    assert max(answers.values()) - min(answers.values()) <= 1, answers


def test_traffic_follows_consul_health(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ctemplate.hcl"
    lab.write_config(config, TEMPLATE)
    lab.start_ctemplate(config)
    all_three = {"backend-1", "backend-2", "backend-3"}
    wait_for(lambda: lab.nginx.get()[0] in all_three, 10, "nginx to proxy", lab.log())

    # Step 6: round robin over all three.
    assert_round_robin(lab.traffic(30), all_three)

    # Step 7: kill -9 one backend. Clients never see an error (nginx retries the next server
    # until the reload), and afterwards nothing goes to the dead one.
    victim = lab.backends[1]
    dropped, during = lab.follow(victim, victim.kill9, present=False)
    assert not [a for a in during if a.startswith("error")], (during, lab.log())
    upstream = lab.nginx.destination.read_text()
    assert f"127.0.0.1:{victim.port};" not in upstream
    assert upstream.count("    server 127.0.0.1:") == 2
    assert_round_robin(lab.traffic(30), all_three - {victim.name})

    # ... and starting it again brings it back.
    back, during = lab.follow(victim, victim.start, present=True)
    assert not [a for a in during if a.startswith("error")], (during, lab.log())
    assert_round_robin(lab.traffic(30), all_three)

    log = lab.daemon.log() if lab.daemon else ""
    assert "ERR" not in log, log
    for what, seen in (("kill -9 -> dropped", dropped), ("restart -> back", back)):
        check_to_file = seen["file"] - seen["check"]
        file_to_nginx = seen["nginx"] - seen["file"]
        old_gone = seen["old gone"] - seen["file"]
        report(
            capsys,
            f"{what}: after {seen['check']:.2f}s Consul check, {seen['file']:.2f}s file, "
            f"{seen['nginx']:.2f}s nginx; check->file {check_to_file * 1000:.0f} ms, "
            f"file->new nginx worker answering {file_to_nginx * 1000:.0f} ms, "
            f"file->old workers gone {old_gone * 1000:.0f} ms",
        )
        assert check_to_file < 5, seen
        assert file_to_nginx < 5, seen


def test_broken_config_is_refused_by_check_command(lab: Lab, tmp_path: Path) -> None:
    # The real template, plus a line that emits `server ;` (which nginx rejects) whenever
    # the key <service>/broken is set: bad data turns into a bad config.
    comment, end, body = TEMPLATE.read_text().partition("-#}")
    marker = "upstream backend_apps {\n"
    assert body.count(marker) == 1
    broken_line = (
        f'{{% if keyOrDefault("{lab.service}/broken", "") %}}\n    server ;\n{{% endif %}}\n'
    )
    template = tmp_path / "nginx-upstream-broken.conf.j2"
    template.write_text(comment + end + body.replace(marker, marker + broken_line))
    config = tmp_path / "ctemplate.hcl"
    lab.write_config(config, template)
    daemon = lab.start_ctemplate(config)
    wait_for(lambda: lab.nginx.get()[0].startswith("backend-"), 10, "nginx to proxy", lab.log())
    lab.traffic(3)
    workers = set(lab.workers)
    before = lab.nginx.destination.read_bytes()

    lab.consul.put_kv(f"{lab.service}/broken", "yes")
    wait_for(lambda: "[ERR]" in daemon.log(), 10, "the check to fail", lab.log())
    log = daemon.log()
    line = next(line for line in log.splitlines() if "[ERR]" in line)
    assert f"check_command '{CHECK} {lab.nginx.conf}" in line, log
    assert "the old file stays" in line, log
    assert 'invalid number of arguments in "server" directive' in line, log
    # The message names the destination, not the temporary file that was checked.
    assert f"in {lab.nginx.destination}:" in line, log
    assert "reload" not in log.split(line, 1)[1], log  # the reload command did not run

    time.sleep(0.5)  # give a wrongly installed file the chance to show up
    assert lab.nginx.destination.read_bytes() == before
    assert sorted(p.name for p in lab.nginx.destination.parent.iterdir()) == ["backend_apps.conf"]
    assert_round_robin(lab.traffic(30), {"backend-1", "backend-2", "backend-3"})
    assert lab.workers == workers, "nginx was reloaded"
    assert not list(lab.nginx.prefix.glob(".nginx-check-staged*")), "check left files behind"

    # Fixing the data lets changes through again.
    lab.consul.delete_kv(f"{lab.service}/broken")
    victim = lab.backends[0]
    victim.kill9()
    wait_for(
        lambda: f":{victim.port};" not in lab.nginx.destination.read_text(),
        10,
        "the upstream to drop backend-1",
        lab.log(),
    )


def test_no_passing_backend_still_a_valid_config(
    consul: ConsulAgent, unique: str, nginx_binary: str, tmp_path: Path
) -> None:
    """An upstream without servers is an nginx error; the template keeps it valid and
    answers 503."""
    nginx = Nginx(nginx_binary, tmp_path / "nginx")
    env = {"APP_SERVICE": f"production.nothing-{unique}", "NGINX_LISTEN": f"127.0.0.1:{nginx.port}"}
    result = run_ctemplate(
        [
            "-consul-addr",
            consul.http_addr,
            "-once",
            "-template",
            f"{TEMPLATE}:{nginx.destination}",
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    text = nginx.destination.read_text()
    assert "    server 127.0.0.1:1 down;\n" in text
    assert 'return 503 "no backend available\\n";' in text
    try:
        nginx.start()
        wait_for(lambda: nginx.get()[0] != "error: ConnectError", 10, "nginx to answer")
        r = httpx.get(nginx.url)
        assert (r.status_code, r.text) == (503, "no backend available\n")
    finally:
        nginx.stop()


# --- contrib/nginx-check-staged -------------------------------------------------------------


def check_staged(
    main: Path, staged: Path, destination: Path, nginx: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK), str(main), *extra],
        env={
            **os.environ,
            "NGINX_BIN": nginx,
            "NGINX": "3;4;",  # nginx's own variable (inherited sockets): must not reach nginx -t
            "CTEMPLATE_STAGED": str(staged),
            "CTEMPLATE_DESTINATION": str(destination),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


UPSTREAM_OK = "upstream backend_apps { server 127.0.0.1:1; }\n"
UPSTREAM_BAD = "upstream backend_apps {\n    server ;\n}\n"


@pytest.fixture
def etc(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    """Write a tree of config files under tmp_path/etc; returns etc/nginx.conf."""

    def make(files: dict[str, str]) -> Path:
        root = tmp_path / "etc"
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text.replace("{root}", str(root)))
        return root / "nginx.conf"

    return make


def main_conf(body: str) -> str:
    head = 'pid "{root}/nginx.pid";\nerror_log "{root}/error.log";\nevents {}\n'
    return f"{head}http {{\n{body}}}\n"


@pytest.mark.parametrize(
    ("files", "destination"),
    [
        # A literal, relative include: relative to the main config's directory.
        ({"nginx.conf": main_conf("include gen/up.conf;\n")}, "gen/up.conf"),
        # Debian's layout: conf.d/*.conf; also when the file does not exist yet.
        (
            {
                "nginx.conf": main_conf('include "{root}/conf.d/*.conf";  # ctemplate\n'),
                "conf.d/a.conf": "upstream a { server 127.0.0.1:1; }\n",
            },
            "conf.d/up.conf",
        ),
        # sites-enabled/* -> a site that includes the generated file.
        (
            {
                "nginx.conf": main_conf("include sites-enabled/*;\n"),
                "sites-enabled/apps": "include {root}/gen/up.conf;\n"
                "server { listen 127.0.0.1:9; location / { proxy_pass http://backend_apps; } }\n",
                "sites-enabled/other": "upstream other { server 127.0.0.1:1; }\n",
                "gen/up.conf": "upstream backend_apps { server 127.0.0.1:2; }\n",
            },
            "gen/up.conf",
        ),
    ],
    ids=["literal", "wildcard", "nested"],
)
def test_check_staged_accepts_and_rejects(
    etc: Callable[[dict[str, str]], Path],
    nginx_binary: str,
    files: dict[str, str],
    destination: str,
) -> None:
    main = etc(files)
    dest = main.parent / destination
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = dest.parent / f".{dest.name}.1234.tmp"
    before = sorted(p.relative_to(main.parent) for p in main.parent.rglob("*"))

    staged.write_text(UPSTREAM_OK)
    ok = check_staged(main, staged, dest, nginx_binary)
    assert ok.returncode == 0, ok.stderr

    staged.write_text(UPSTREAM_BAD)
    bad = check_staged(main, staged, dest, nginx_binary)
    assert bad.returncode == 1, bad.stderr
    # One line, naming the destination ("line 2 of the new version"), not temporary files.
    assert bad.stderr == (
        f"nginx rejects the new version of {dest}: "
        f'[emerg] invalid number of arguments in "server" directive in {dest}:2\n'
    )

    staged.unlink()
    after = sorted(p.relative_to(main.parent) for p in main.parent.rglob("*"))
    created_by_nginx = {Path("nginx.pid"), Path("error.log")}
    assert set(after) - created_by_nginx == set(before) - created_by_nginx


def test_check_staged_finds_a_duplicate_upstream(
    etc: Callable[[dict[str, str]], Path], nginx_binary: str
) -> None:
    """What only a check against the whole config can see."""
    main = etc(
        {
            "nginx.conf": main_conf("include conf.d/*.conf;\n"),
            "conf.d/a-old.conf": UPSTREAM_OK,
        }
    )
    dest = main.parent / "conf.d" / "new.conf"
    staged = dest.parent / ".new.conf.1.tmp"
    staged.write_text(UPSTREAM_OK)
    result = check_staged(main, staged, dest, nginx_binary)
    assert result.returncode == 1
    assert f'duplicate upstream "backend_apps" in {dest}:1' in result.stderr


def test_check_staged_errors(etc: Callable[[dict[str, str]], Path], nginx_binary: str) -> None:
    main = etc({"nginx.conf": main_conf("# include gen/up.conf;\n")})
    dest = main.parent / "gen" / "up.conf"
    dest.parent.mkdir()
    staged = dest.parent / ".up.conf.1.tmp"
    staged.write_text(UPSTREAM_OK)
    result = check_staged(main, staged, dest, nginx_binary)
    assert result.returncode == 2
    assert result.stderr == (
        f"nginx-check-staged: {main} does not include {dest}, directly or through the files "
        "it includes, so nginx would not read it; fix the include or the path given\n"
    )
    result = subprocess.run([str(CHECK), str(main)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "CTEMPLATE_STAGED and CTEMPLATE_DESTINATION are not set" in result.stderr

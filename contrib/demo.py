#!/usr/bin/env python3
"""The Consul workshop ("やわらか Consul", steps 5-7) on one machine, with ctemplate.

    bash scripts/demo [--keep] [--no-nginx] [--requests N]

1. starts ``consul agent -dev`` on free loopback ports (binary from scripts/get-consul);
2. starts three tiny HTTP backends (contrib/backend.py, answering ``OK: response from
   backend-N``) and registers them as the service ``application`` tagged ``production``, each
   with an HTTP health check every second;
3. starts nginx (scripts/get-nginx) with a private configuration in a temporary directory,
   on a free loopback port, and ctemplate rendering templates/nginx-upstream.conf.j2 into it,
   validated by contrib/nginx-check-staged and followed by ``nginx -s reload``;
4. sends requests and shows how they spread over the backends; kills backend-2 with SIGKILL
   (the workshop's ``kill -9``), shows how long the drop took (Consul check -> ctemplate
   writes the file -> nginx serves the new upstream) and that clients see no errors; starts
   backend-2 again and shows it coming back.

Without nginx (not installed and not root) it shows the rendered file only and says so.
Everything it starts is stopped again, by pid, on success, on error and on Ctrl-C/SIGTERM.
Exit status 0 on success, 1 with a message on failure (the temporary directory with all logs
is kept then), 130/143 when interrupted. Needs Python 3.11 and httpx (scripts/demo sets up
.venv with both).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the Consul starter used by the tests (no pytest)

from consul_harness import (  # noqa: E402
    ConsulAgent,
    ConsulUnavailableError,
    find_consul,
    free_port,
)
from replace_watch import ReplaceWatch  # noqa: E402

TEMPLATE = REPO / "templates" / "nginx-upstream.conf.j2"
CHECK = REPO / "contrib" / "nginx-check-staged"
BACKEND = REPO / "contrib" / "backend.py"
GET_NGINX = REPO / "scripts" / "get-nginx"

SERVICE = "application"
TAG = "production"
CHANGE_TIMEOUT = 20.0  # seconds for a change to go Consul -> file -> nginx


class DemoError(Exception):
    """Something did not work; the message says what."""


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- output ---------------------------------------------------------------------------------


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def say(text: str = "", indent: int = 4) -> None:
    for line in text.splitlines() or [""]:
        print(" " * indent + line, flush=True)


def upstream_block(text: str) -> str:
    match = re.search(r"^upstream backend_apps \{.*?^\}", text, re.S | re.M)
    return match.group(0) if match else text


# --- processes ------------------------------------------------------------------------------


def alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, as another user (nginx workers of a root master)
        return True
    return True


def stop_process(
    proc: subprocess.Popen[Any], first: int = signal.SIGTERM, grace: float = 5.0
) -> None:
    """Signal one child (by pid), wait, then SIGKILL; also SIGKILL what is left of its
    process group (every child is started in a session of its own)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, first)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Backend:
    name: str
    port: int = 0
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, log: Path) -> None:
        with open(log, "a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(BACKEND), "--name", self.name, "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 10.0)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("listening "):
            stop_process(self.proc)
            raise DemoError(f"{self.name} did not start (see {log})")
        self.port = int(line.rsplit(":", 1)[1])

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            if self.proc.stdout:
                self.proc.stdout.close()


NGINX_CONF = (REPO / "contrib" / "nginx-loopback.conf").read_text()


@dataclass
class Nginx:
    binary: str
    prefix: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def args(self) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf)]

    def write_config(self) -> None:
        (self.prefix / "conf.d").mkdir(parents=True, exist_ok=True)
        (self.prefix / "tmp").mkdir(exist_ok=True)
        self.conf.write_text(NGINX_CONF.replace("@PREFIX@", str(self.prefix)))

    def start(self) -> None:
        with open(self.prefix / "nginx.out", "ab") as out:
            self.proc = subprocess.Popen(
                self.args(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid_file = self.prefix / "nginx.pid"
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise DemoError(f"nginx exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                if int(pid_file.read_text()) == self.proc.pid:
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"nginx did not start within 10s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 15) -> str:
        text = ""
        for name in ("nginx.out", "error.log"):
            with contextlib.suppress(OSError):
                text += (self.prefix / name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGQUIT)  # graceful, then SIGKILL after 5s


class Client:
    """Requests to nginx on a fresh connection each, so each sees the current workers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=3.0, limits=httpx.Limits(max_keepalive_connections=0))

    def get(self) -> tuple[str, str]:
        """(backend name or error text, nginx worker pid or "")."""
        try:
            r = self.http.get(self.url, headers={"Connection": "close"})
        except httpx.HTTPError as exc:
            return f"error: {type(exc).__name__}", ""
        worker = r.headers.get("x-nginx-worker", "")
        match = re.fullmatch(r"OK: response from (\S+)\n?", r.text)
        if r.status_code == 200 and match:
            return match.group(1), worker
        return f"error: HTTP {r.status_code}", worker

    def close(self) -> None:
        self.http.close()


@dataclass
class Spread:
    answers: Counter[str] = field(default_factory=Counter)

    def add(self, answer: str) -> None:
        self.answers[answer] += 1

    @property
    def errors(self) -> int:
        return sum(n for a, n in self.answers.items() if a.startswith("error"))

    def __str__(self) -> str:
        parts = [f"{name}: {n}" for name, n in sorted(self.answers.items())]
        return "  ".join(parts) if parts else "no requests"


# --- the demo -------------------------------------------------------------------------------


class Demo:
    def __init__(self, *, use_nginx: bool, requests: int) -> None:
        self.use_nginx = use_nginx
        self.requests = requests
        self.tmp = Path(tempfile.mkdtemp(prefix="ctemplate-demo-"))
        self.agent: ConsulAgent | None = None
        self.backends = [Backend(f"backend-{i}") for i in (1, 2, 3)]
        self.nginx: Nginx | None = None
        self.client: Client | None = None
        self.ctemplate: subprocess.Popen[bytes] | None = None
        self.ctemplate_log = self.tmp / "ctemplate.log"
        self.log_offset = 0
        self.destination = self.tmp / "nginx" / "conf.d" / "backend_apps.conf"
        self.workers: set[str] = set()
        self.timings: list[tuple[str, dict[str, float]]] = []

    # -- set-up --

    def start_consul(self) -> None:
        step("Consul: a dev agent on loopback (the workshop's front node)")
        try:
            binary = find_consul()
        except ConsulUnavailableError as exc:
            raise DemoError(f"no consul binary: {exc}") from None
        self.agent = ConsulAgent(binary, node_name="front", log_level="info")
        started = time.monotonic()
        self.agent.start()
        version = subprocess.run(
            [binary, "version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        say(
            f"{version[0] if version else binary}: http://{self.agent.http_addr}/ "
            f"(ready in {time.monotonic() - started:.1f}s, pid {self.agent.pid})"
        )

    def start_backends(self) -> None:
        step('Step 5: three rack-like backends, registered as "application" tagged "production"')
        assert self.agent is not None
        for b in self.backends:
            b.start(self.tmp / f"{b.name}.log")
            self.agent.register_service(
                SERVICE,
                id=b.name,
                port=b.port,
                address="127.0.0.1",
                tags=(TAG,),
                check={
                    "CheckID": f"{b.name}-http",
                    "Name": f"HTTP GET {b.url}",
                    "HTTP": b.url,
                    "Interval": "1s",
                    "Timeout": "1s",
                },
            )
            say(f"{b.name}  {b.url}  pid {b.proc.pid if b.proc else '?'}  check: GET every 1s")
        started = time.monotonic()
        self.wait_for(
            lambda: len(self.agent.health_service(SERVICE, passing=True)) == 3 if self.agent else 0,
            "all three health checks passing",
        )
        say(f"all three checks passing after {time.monotonic() - started:.1f}s")
        say(f"(curl 'http://{self.agent.http_addr}/v1/health/service/{SERVICE}?tag={TAG}&passing')")

    def find_nginx(self) -> str | None:
        if not self.use_nginx:
            say("nginx: left out (--no-nginx); the upstream file is shown, no traffic is sent")
            return None
        installed = any(
            shutil.which(p) or os.access(p, os.X_OK)
            for p in ("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx")
        )
        if not installed and os.geteuid() == 0:
            say(
                "nginx is not installed: installing Debian's nginx-light with apt-get "
                "(scripts/get-nginx; may take a minute; --no-nginx skips nginx)"
            )
        started = time.monotonic()
        proc = subprocess.run(
            ["bash", str(GET_NGINX)], capture_output=True, text=True, timeout=600, check=False
        )
        path = proc.stdout.strip()
        if not installed and proc.returncode == 0 and path:
            say(f"nginx-light installed in {time.monotonic() - started:.0f}s: {path}")
        if proc.returncode != 0 or not path:
            reason = (proc.stderr.strip().splitlines() or ["scripts/get-nginx failed"])[-1]
            say(f"nginx is not available ({reason})")
            say("=> rendering only: the upstream file is shown, no traffic goes through nginx")
            return None
        return path

    def start_nginx_and_ctemplate(self) -> None:
        step("Step 6: ctemplate renders the nginx upstream from Consul")
        assert self.agent is not None
        prefix = self.tmp / "nginx"
        prefix.mkdir()
        binary = self.find_nginx()
        if binary:
            self.nginx = Nginx(binary, prefix, free_port())
            self.nginx.write_config()
            self.nginx.start()
            self.client = Client(self.nginx.url)
            say(
                f"nginx (pid {self.nginx.proc.pid if self.nginx.proc else '?'}) with "
                f"{self.nginx.conf}, which includes conf.d/*.conf"
            )
        else:
            (prefix / "conf.d").mkdir(parents=True)
        config = self.write_ctemplate_config()
        say(f"$ ctemplate -config {config}")
        say(config.read_text(), indent=6)
        env = {
            **os.environ,
            "NGINX_LISTEN": f"127.0.0.1:{self.nginx.port if self.nginx else 8080}",
        }
        env.pop("APP_SERVICE", None)
        self.warm_hcl_parser()
        ctemplate = Path(sys.executable).parent / "ctemplate"
        argv = [str(ctemplate)] if ctemplate.exists() else [sys.executable, "-m", "ctemplate"]
        with open(self.ctemplate_log, "ab") as log:
            self.ctemplate = subprocess.Popen(
                [*argv, "-config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.tmp,
                start_new_session=True,
            )
        started = time.monotonic()
        say(
            "waiting for ctemplate: it starts Python, reads Consul, runs check_command "
            "(nginx -t on a staged copy) and writes the file"
        )
        self.wait_for(lambda: self.destination.exists(), "ctemplate to write the upstream file")
        say(f"{self.destination} written after {time.monotonic() - started:.2f}s:")
        say(self.destination.read_text().rstrip(), indent=6)
        self.show_ctemplate_log()
        if self.nginx and self.client:
            client = self.client
            self.wait_for(lambda: client.get()[0].startswith("backend-"), "nginx to answer")

    def warm_hcl_parser(self) -> None:
        """Build python-hcl2's parser cache now, saying so, if this .venv has none yet.

        python-hcl2 builds its LALR parser the first time it parses anything (about 10 s on a
        slow machine) and caches it next to its code; without this step the demo's first run
        showed ctemplate taking 10 s to write its first file, and 0.7 s on the next run.
        """
        code = "import os, hcl2.parser as p; print(os.path.exists(p.PARSER_FILE))"
        check = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        if check.stdout.strip() != "False":
            return  # cached already (or another python-hcl2 layout)
        say("first run: python-hcl2 builds its HCL parser once (about 10 s), then caches it")
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-c", "import hcl2; hcl2.loads('a = 1\\n')"],
            capture_output=True,
            check=False,
        )
        say(f"HCL parser built and cached in {time.monotonic() - started:.1f}s")

    def write_ctemplate_config(self) -> Path:
        assert self.agent is not None
        q = json.dumps  # an HCL string is a JSON string (no "${" in these paths)
        lines = [
            "consul {",
            f"  address = {q(self.agent.http_addr)}",
            '  retry { backoff = "250ms" max_backoff = "2s" }',
            "}",
            'log_level = "info"',
            "template {",
            f"  source        = {q(str(TEMPLATE))}",
            f"  destination   = {q(str(self.destination))}",
        ]
        if self.nginx:
            nginx = self.nginx
            check = [str(CHECK), str(nginx.conf), "--", "-p", str(nginx.prefix)]
            lines += [
                "  # nginx -t on a copy of nginx.conf with the new file; if it fails, the old file",
                "  # stays and nginx is not reloaded",
                f"  check_command = [{', '.join(q(a) for a in check)}]",
                f"  command       = [{', '.join(q(a) for a in [*nginx.args(), '-s', 'reload'])}]",
                '  command_timeout = "15s"',
            ]
        lines.append("}")
        path = self.tmp / "ctemplate.hcl"
        path.write_text("\n".join(lines) + "\n")
        return path

    # -- helpers --

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.check_alive()
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.02)

    def check_alive(self) -> None:
        if self.ctemplate is not None and self.ctemplate.poll() is not None:
            raise DemoError(
                f"ctemplate exited with status {self.ctemplate.returncode}:\n"
                + self.ctemplate_tail()
            )
        if self.nginx and self.nginx.proc and self.nginx.proc.poll() is not None:
            raise DemoError(f"nginx exited:\n{self.nginx.log_tail()}")

    def ctemplate_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.ctemplate_log.read_text(errors="replace").splitlines()[-lines:])
        return "<no log>"

    def show_ctemplate_log(self) -> None:
        """The ctemplate log lines written since the last call."""
        with contextlib.suppress(OSError), open(self.ctemplate_log, "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
            self.log_offset += len(data)
            for line in data.decode("utf-8", "replace").splitlines():
                say(f"ctemplate| {line}", indent=6)

    def traffic(self, count: int) -> Spread:
        spread = Spread()
        if self.client is None:
            return spread
        for _ in range(count):
            answer, worker = self.client.get()
            spread.add(answer)
            if worker:
                self.workers.add(worker)
        return spread

    def check_status(self, backend: Backend) -> str:
        assert self.agent is not None
        for check in self.agent.request("GET", f"/v1/health/checks/{SERVICE}").json() or ():
            if check.get("ServiceID") == backend.name:
                return str(check.get("Status"))
        return "missing"

    def follow_change(
        self, backend: Backend, action: Callable[[], None], *, present: bool
    ) -> Spread:
        """Do ``action`` (kill or start ``backend``), then poll Consul, the upstream file and
        nginx until the change has reached all three, and say when it reached each. Returns
        the answers nginx gave meanwhile.

        The file counts as changed when ctemplate renames the new version over it (noticed to
        the millisecond by a thread); nginx when a worker started after that answers. nginx's
        master lets the old workers accept connections for another 100 ms or so, so we also
        wait until they are gone."""
        want = "passing" if present else "critical"
        line = f":{backend.port};"
        seen: dict[str, float] = {}
        spread = Spread()
        old_workers = set(self.workers)
        with ReplaceWatch(self.destination, DemoError) as replaced:
            started = time.monotonic()
            action()
            while True:
                if "check" not in seen and self.check_status(backend) == want:
                    seen["check"] = time.monotonic() - started
                if "file" not in seen and (line in self.destination.read_text()) == present:
                    seen["file"] = replaced.last() - started
                if self.client is not None:
                    answer, worker = self.client.get()
                    spread.add(answer)
                    if worker:
                        self.workers.add(worker)
                    if "file" in seen and "nginx" not in seen and worker not in old_workers:
                        seen["nginx"] = time.monotonic() - started
                    old_gone = not any(map(alive, old_workers))
                    if "nginx" in seen and "old gone" not in seen and old_gone:
                        seen["old gone"] = time.monotonic() - started
                if {"check", "file"} <= seen.keys() and ("old gone" in seen or self.client is None):
                    break
                self.check_alive()
                if time.monotonic() - started > CHANGE_TIMEOUT:
                    steps = {
                        "check": f"the Consul check to turn {want}",
                        "file": "the upstream file",
                        "nginx": "nginx to reload",
                        "old gone": "nginx's old workers to exit",
                    }
                    waiting = [v for k, v in steps.items() if k not in seen]
                    raise DemoError(
                        f"{backend.name}: after {CHANGE_TIMEOUT:.0f}s still waiting for "
                        f"{', '.join(waiting)}\nctemplate log:\n{self.ctemplate_tail()}"
                    )
                time.sleep(0.001)
        self.timings.append((f"{backend.name} {'back' if present else 'dropped'}", seen))
        ms = {k: f"{v * 1000:.0f} ms" for k, v in seen.items()}
        say(f"Consul check {want:<8} {ms['check']:>8} after the {'start' if present else 'kill'}")
        say(
            f"upstream file replaced  {ms['file']:>8}   "
            f"(check -> file {(seen['file'] - seen['check']) * 1000:.0f} ms: blocking query "
            "returns, render, check_command, rename)"
        )
        if "nginx" in seen:
            say(
                f"nginx new worker answers {ms['nginx']:>7}   "
                f"(file -> nginx {(seen['nginx'] - seen['file']) * 1000:.0f} ms: nginx -s "
                f"reload; old workers gone after {(seen['old gone'] - seen['file']) * 1000:.0f} ms)"
            )
        return spread

    # -- the workshop --

    def show_traffic(self, title: str, *, expect: set[str]) -> None:
        if self.client is None:
            return
        spread = self.traffic(self.requests)
        say(f"{title}: {spread}")
        names = {a for a in spread.answers if not a.startswith("error")}
        if spread.errors:
            raise DemoError(f"{spread.errors} of {self.requests} requests failed: {spread}")
        if names != expect:
            raise DemoError(f"expected answers from {', '.join(sorted(expect))}, got: {spread}")

    def run(self) -> None:
        self.start_consul()
        self.start_backends()
        self.start_nginx_and_ctemplate()
        all_three = {b.name for b in self.backends}
        if self.client:
            say(f"nginx on {self.nginx.url if self.nginx else ''}")
            self.show_traffic(f"{self.requests} requests through nginx", expect=all_three)

        victim = self.backends[1]
        step(f"Step 7: kill -9 {victim.name} (pid {victim.proc.pid if victim.proc else '?'})")
        during = self.follow_change(victim, victim.kill9, present=False)
        if self.client:
            say(f"requests while that happened: {during}")
        say("the upstream now:")
        say(upstream_block(self.destination.read_text()), indent=6)
        self.show_ctemplate_log()
        self.show_traffic(
            f"{self.requests} requests through nginx", expect=all_three - {victim.name}
        )

        step(f"{victim.name} starts again (same port {victim.port})")
        log = self.tmp / f"{victim.name}.log"
        during = self.follow_change(victim, lambda: victim.start(log), present=True)
        if self.client:
            say(f"requests while that happened: {during}")
        say("the upstream now:")
        say(upstream_block(self.destination.read_text()), indent=6)
        self.show_ctemplate_log()
        self.show_traffic(f"{self.requests} requests through nginx", expect=all_three)

        step("Summary")
        for what, seen in self.timings:
            text = f"{what:<18} Consul check {seen['check']:.2f}s -> file {seen['file']:.2f}s"
            if "nginx" in seen:
                text += f" -> nginx {seen['nginx']:.2f}s"
            say(text + "  (after the kill/start)")
        if self.client is None:
            say("nginx was not available: only the rendering was shown")

    def close(self) -> None:
        """Stop everything started, newest first, each by its pid."""
        if self.client:
            self.client.close()
        if self.ctemplate is not None:
            stop_process(self.ctemplate, signal.SIGTERM, grace=10.0)
        if self.nginx:
            self.nginx.stop()
        for b in self.backends:
            b.stop()
        if self.agent is not None:
            self.agent.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-nginx", action="store_true", help="render only, without nginx")
    parser.add_argument("--requests", type=int, default=30, help="requests per round (30)")
    args = parser.parse_args(argv)

    def interrupted(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    demo = Demo(use_nginx=not args.no_nginx, requests=max(args.requests, 3))
    keep = args.keep
    started = time.monotonic()
    status = 0
    try:
        demo.run()
    except Interrupted as exc:
        print(f"\ndemo: interrupted by {exc}; stopping everything", file=sys.stderr)
        status = 128 + exc.signum
    except DemoError as exc:
        print(f"\ndemo: FAILED: {exc}", file=sys.stderr)
        status = 1
        keep = True
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        demo.close()
        if keep:
            print(f"demo: logs and files kept in {demo.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(demo.tmp, ignore_errors=True)
    if status == 0:
        print(f"\ndemo: OK ({time.monotonic() - started:.1f}s); everything started was stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""The emulator's HTTP server: logon/logout, token checks, `/api/query` with paging.

Test and demo controls are plain attributes and methods of `Emulator` (delay, forced
failures, canned answers, token expiry, a request log); they are never reachable over HTTP.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import random
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from bot.emulator import wire
from bot.emulator.data import TYPE_NAMES, SessionStore
from bot.emulator.filterlang import FilterSyntaxError
from bot.emulator.jobs import (
    JOB_SESSION_TYPES,
    JOB_TYPES,
    EmJob,
    EmTask,
    JobSessionStore,
    JobStore,
    json_job,
    json_job_session,
    json_task,
    retry_task,
    xml_entities,
    xml_job,
    xml_job_session,
    xml_task,
)

log = logging.getLogger(__name__)
BOM = "\ufeff"


@dataclass
class Logged:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class Emulator:
    """An in-process EM. `start()` serves on 127.0.0.1 in a daemon thread."""

    store: SessionStore = field(repr=False)
    # Job sessions without task sessions of their own (those of task sessions are derived).
    jobs: JobSessionStore = field(default_factory=JobSessionStore, repr=False)
    # The jobs (`query?type=Job`): one per job of the task sessions, changed or added.
    job_list: JobStore = field(default_factory=JobStore, repr=False)
    username: str = "demo"
    password: str = "demo"  # noqa: S105 - the emulator's documented demo account
    idle_timeout: float = 900.0
    host: str = "127.0.0.1"
    port: int = 0
    camel_case: bool = False  # v13-style JSON keys
    bom: bool = False  # prefix JSON answers with a UTF-8 BOM
    location_header: bool = False  # also send `Location` on logon (EM's docs list none)
    delay: float = 0.0  # seconds to wait before answering /api/query
    fault_rate: float = 0.0  # share of logons, queries and logouts answered 500 (seeded)
    faults: random.Random = field(default_factory=lambda: random.Random(0), repr=False)
    fail_queries: list[int] = field(
        default_factory=list, repr=False
    )  # statuses for the next queries (0: answer normally)
    canned: list[tuple[bytes, str]] = field(
        default_factory=list, repr=False
    )  # next query answers, verbatim
    requests: list[Logged] = field(default_factory=list, repr=False)
    tokens: dict[str, tuple[str, float]] = field(
        default_factory=dict, repr=False
    )  # token → (id, last use)
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server context
    # job actions (`?action=retry`): the tasks they made, and how many GETs of each still
    # answer Running
    tasks: dict[str, EmTask] = field(default_factory=dict, repr=False)
    task_polls: int = 1
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _issued: list[str] = field(default_factory=list, repr=False)
    _open: set[Any] = field(default_factory=set, repr=False)  # client connections

    @property
    def url(self) -> str:
        assert self._server is not None, "emulator not started"
        host, port = self._server.server_address[:2]
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host!s}:{port}"

    def _bind(self) -> ThreadingHTTPServer:
        handler = type("Handler", (_Handler,), {"emulator": self})
        server = _QuietServer((self.host, self.port), handler)
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        return server

    def start(self) -> Emulator:
        self._server = self._bind()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server = self._bind()
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving, and drop the connections clients keep open: EM is gone."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            open_now, self._open = list(self._open), set()
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def expire_tokens(self) -> None:
        """Forget every logon session, as EM does after its idle timeout."""
        with self._lock:
            self.tokens.clear()

    def faulty(self) -> bool:
        """True when this request is to fail with a 500 (`fault_rate`)."""
        with self._lock:
            return self.fault_rate > 0 and self.faults.random() < self.fault_rate

    def queries(self) -> list[Logged]:
        return [r for r in self.requests if r.path.lower() == "/api/query"]

    # -- request handling helpers, called from handler threads
    def logon(self, authorization: str) -> tuple[str, str] | None:
        try:
            raw = base64.b64decode(authorization.removeprefix("Basic ").strip()).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = raw.partition(":")
        if user != self.username or password != self.password:
            return None
        session_id = str(uuid.uuid4())
        token = base64.b64encode(session_id.encode()).decode()
        with self._lock:
            self.tokens[token] = (session_id, time.monotonic())
            self._issued.append(token)
        return token, session_id

    def check_token(self, token: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            entry = self.tokens.get(token)
            if entry is None or now - entry[1] > self.idle_timeout:
                self.tokens.pop(token, None)
                return None
            self.tokens[token] = (entry[0], now)
            return entry[0]

    def sessions_seen(self) -> list[str]:
        """Every logon token handed out (tests check that none leaks into a log)."""
        with self._lock:
            return list(self._issued)

    def logout(self, session_id: str) -> bool:
        with self._lock:
            for token, (sid, _) in list(self.tokens.items()):
                if sid == session_id:
                    del self.tokens[token]
                    return True
        return False


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up before its answer (a timeout, a killed bot) is normal here."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client %s hung up before its answer", client_address)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    emulator: Emulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't stall on ACKs
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        with self.emulator._lock:
            self.emulator._open.add(self.connection)

    def finish(self) -> None:
        with self.emulator._lock:
            self.emulator._open.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator: " + format, *args)

    # ------------------------------------------------------------- plumbing
    @property
    def wants_json(self) -> bool:
        return "application/json" in self.headers.get("Accept", "").lower()

    def base(self) -> str:
        host = self.headers.get("Host") or "127.0.0.1"
        return f"{'https' if self.emulator.tls else 'http'}://{host}"

    def send(
        self,
        status: int,
        body: str | bytes = b"",
        ctype: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        if data:
            self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_doc(
        self,
        status: int,
        xml: str | Callable[[], str],
        doc: dict[str, Any] | Callable[[], dict[str, Any]],
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer in the form the client asked for; a callable is only built when chosen."""
        if self.wants_json:
            text = wire.dump_json(
                doc() if callable(doc) else doc, camel_case=self.emulator.camel_case
            )
            if self.emulator.bom:
                text = BOM + text
            self.send(status, text, "application/json; charset=utf-8", headers)
        else:
            self.send(
                status, xml() if callable(xml) else xml, "application/xml; charset=utf-8", headers
            )

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.send_doc(
            status, wire.xml_error(message, status), wire.json_error(message, status), headers
        )

    def route(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.emulator.requests.append(
            Logged(
                self.command, parts.path, params, {k.lower(): v for k, v in self.headers.items()}
            )
        )
        return parts.path.rstrip("/").lower(), params

    def authed(self) -> str | None:
        token = self.headers.get("X-RestSvcSessionId", "")
        cookie = self.headers.get("Cookie", "")
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == "X-RestSvcSessionId":
                token = value  # EM uses the cookie over the header
        session = self.emulator.check_token(token) if token else None
        if session is None:
            self.error(
                401,
                "Authorization header has been expected but not found (or found but is expired).",
            )
        return session

    # ------------------------------------------------------------ endpoints
    def do_POST(self) -> None:
        path, params = self.route()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if path.startswith(("/api/jobs/", "/api/agents/jobs/")) and self.authed() is not None:
            agent = path.startswith("/api/agents/")
            self.job_action(unquote(path.rsplit("/", 1)[1]), params.get("action", ""), agent)
            return
        if path != "/api/sessionmngr":
            self.error(404, "Not found")
            return
        if self.emulator.faulty():
            self.error(500, "The operation has timed out (emulated failure)")
            return
        got = self.emulator.logon(self.headers.get("Authorization", ""))
        if got is None:
            self.error(401, "Unauthorized", {"WWW-Authenticate": "Basic Realm=RestSvc"})
            return
        token, session_id = got
        base = self.base()
        # As EM's reference documents it: the token header and cookie, a LogonSession body
        # with SessionId and a Delete link, and no Location header (unless asked for).
        headers = {
            "X-RestSvcSessionId": token,
            "Set-Cookie": f"X-RestSvcSessionId={token}; Path=/api;",
        }
        if self.emulator.location_header:
            headers["Location"] = f"{base}/api/logonSessions/{session_id}"
        self.send_doc(
            201,
            wire.xml_logon(base, session_id, self.emulator.username),
            wire.json_logon(base, session_id, self.emulator.username),
            headers,
        )

    def do_DELETE(self) -> None:
        path, _ = self.route()
        if self.emulator.faulty():
            self.error(500, "The operation has timed out (emulated failure)")
            return
        if self.authed() is None:
            return
        if path.startswith("/api/logonsessions/") and self.emulator.logout(path.rsplit("/", 1)[1]):
            self.send(204)
        else:
            self.error(500, "Object reference not set to an instance of an object.")

    def do_GET(self) -> None:
        path, params = self.route()
        if path == "/api":
            self.send_doc(200, _DISCOVERY_XML, {"Links": [], "Href": None, "Type": None})
            return
        if self.authed() is None:
            return
        if path == "/api/query":
            self.query(params)
            return
        if path.startswith("/api/tasks/"):
            self.task(path.rsplit("/", 1)[1])
            return
        for prefix, type_key in (
            ("/api/replicatasksessions/", "replicatasksession"),
            ("/api/backuptasksessions/", "backuptasksession"),
        ):
            if path.startswith(prefix):
                self.entity(type_key, path.rsplit("/", 1)[1])
                return
        self.error(404, f"Resource not found: {self.path.split('?')[0]}")

    def job_action(self, guid: str, action: str, agent: bool = False) -> None:
        """`POST /api/jobs/{id}?action=retry` (an agent job's: `/api/agents/jobs/{id}`): 202
        and a Running task (the only action the emulator knows). Agent jobs are known here
        from their runs."""
        if action.lower() != "retry":
            self.error(400, f"Action [{action}] is not supported by the emulator")
            return
        emu = self.emulator
        every = emu.jobs.query("backupjobsession", emu.store, "", "", True)
        every += emu.jobs.query("replicajobsession", emu.store, "", "", True)
        if agent:
            mine = [s for s in every if s.job_uid.rsplit(":", 1)[-1].lower() == guid
                    and s.job_type in ("AgentBackup", "AgentManagement")]  # fmt: skip
            job = EmJob(mine[0].job_uid, mine[0].job, mine[0].job_type, "", mine[0].server,
                        mine[0].server_uid) if mine else None  # fmt: skip
        else:
            job = next((j for j in emu.job_list.all(emu.store) if j.guid.lower() == guid), None)
        runs = [s for s in every if job is not None and s.job_uid == job.uid]
        with emu._lock:
            task = retry_task(len(emu.tasks) + 1, job, runs, emu.task_polls)
            emu.tasks[task.id] = task
        base = self.base()
        self.send_doc(202, xml_task(task, base, True), json_task(task, base, True))

    def task(self, task_id: str) -> None:
        emu = self.emulator
        with emu._lock:
            task = emu.tasks.get(task_id)
            running = task is not None and task.polls_left > 0
            if task is not None and running:
                task.polls_left -= 1
        if task is None:
            self.error(404, f"Task {task_id} not found")
            return
        base = self.base()
        self.send_doc(200, xml_task(task, base, running), json_task(task, base, running))

    def entity(self, type_key: str, guid: str) -> None:
        found = self.emulator.store.get(f"urn:veeam:{TYPE_NAMES[type_key]}:{guid}")
        if found is None:
            self.error(404, f"Session {guid} not found")
            return
        base = self.base()
        self.send_doc(
            200,
            '<?xml version="1.0" encoding="utf-8"?>\n' + wire.xml_session(found, base, root=True),
            wire.json_session(found, base),
        )

    def query(self, params: dict[str, str]) -> None:
        emu = self.emulator
        if emu.delay:
            time.sleep(emu.delay)
        status = emu.fail_queries.pop(0) if emu.fail_queries else 0
        status = status or (500 if emu.faulty() else 0)
        if status:
            self.error(status, "Service temporarily unavailable (emulated failure)")
            return
        if emu.canned:
            body, ctype = emu.canned.pop(0)
            self.send(200, body, ctype)
            return
        try:
            items, paging, type_name = self.run_query(params)
        except FilterSyntaxError as exc:
            self.error(400, str(exc))
            return
        base = self.base()
        if type_name in JOB_SESSION_TYPES.values() or type_name == "Job":
            plural = f"{type_name}s"
            xml_one, json_one = (xml_job, json_job) if type_name == "Job" else (
                xml_job_session, json_job_session)  # fmt: skip
            self.send_doc(
                200,
                lambda: xml_entities(items, plural, xml_one, base, paging),
                lambda: wire.json_entities(items, plural, json_one, base, paging),
            )
            return
        self.send_doc(
            200,
            lambda: wire.xml_query(items, type_name, base, paging),
            lambda: wire.json_query(items, type_name, base, paging),
        )

    def run_query(self, params: dict[str, str]) -> tuple[list[Any], dict[str, Any], str]:
        lowered = {k.lower(): v for k, v in params.items()}
        type_key = lowered.get("type", "").lower()
        if type_key not in TYPE_NAMES and type_key not in JOB_SESSION_TYPES | JOB_TYPES:
            raise FilterSyntaxError(f"Unknown query type [{lowered.get('type', '')}]")
        if lowered.get("format", "references").lower() != "entities":
            raise FilterSyntaxError("The emulator serves format=Entities only")
        try:
            size = int(lowered.get("pagesize", "100"))
            num = int(lowered.get("page", "1"))
        except ValueError:
            raise FilterSyntaxError("pageSize and page must be numbers") from None
        if size <= 0 or num <= 0:
            raise FilterSyntaxError("pageSize and page must be greater than zero")
        sort, asc = lowered.get("sortasc", ""), True
        if lowered.get("sortdesc"):
            sort, asc = lowered["sortdesc"], False
        flt = lowered.get("filter", "")
        matched: list[Any]
        if type_key in JOB_TYPES:
            matched = self.emulator.job_list.query(self.emulator.store, flt, sort, asc)
            type_name = JOB_TYPES[type_key]
        elif type_key in JOB_SESSION_TYPES:
            matched = self.emulator.jobs.query(type_key, self.emulator.store, flt, sort, asc)
            type_name = JOB_SESSION_TYPES[type_key]
        else:
            matched = self.emulator.store.query(type_key, flt, sort, asc)
            type_name = TYPE_NAMES[type_key]
        count = max(1, -(-len(matched) // size))
        keep = {k: v for k, v in params.items() if k.lower() not in ("page",)}
        paging = {
            "num": num,
            "size": size,
            "count": count,
            "links": wire.paging_links(self.base(), keep, num, count),
        }
        return matched[(num - 1) * size : num * size], paging, type_name


_DISCOVERY_XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n<EnterpriseManager xmlns="http://www.veeam.com/ent/v1.0">'
    '<SupportedVersions><SupportedVersion Name="v1_7" /></SupportedVersions></EnterpriseManager>\n'
)

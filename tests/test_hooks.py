"""Event hooks (``rtmpd.hooks``) in memory: parsing, signatures, backoff, the webhook sink on a fake clock
and a fake HTTP, treq against a stub server, the exec sink with a fake spawner and with real commands,
the service's shutdown, the options, and the recording's record_start/record_done events."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from rtmpd.hooks import HookConfigError, HookSettings, parse_hook, sign, verify
from rtmpd.hooks.backoff import Backoff
from rtmpd.hooks.command import ExecSink, event_environment
from rtmpd.hooks.options import HookOptions
from rtmpd.hooks.process import MAX_LINES, LineLimiter
from rtmpd.hooks.service import HookService
from rtmpd.hooks.signature import read_secret
from rtmpd.hooks.sink import HookEvent
from rtmpd.hooks.webhook import TreqPoster, WebhookSink, WebhookTimeout, describe_failure
from rtmpd.notify import EVENT_NAMES, Notifier, ServerEvent
from tests.test_recorder import EPOCH, RecorderTestCase

SECRET = b"s3cret-for-tests"


def event(name: str = "publish_start", n: int = 0, **fields: Any) -> HookEvent:
    fields.setdefault("stream_key", "live/cam")
    return HookEvent.of(ServerEvent(name, 1000.0 + n, fields), f"id{n}")


# -- parsing, signatures, backoff --------------------------------------------------------------


class SpecTests(SynchronousTestCase):
    def test_events_list_star_and_target_with_equals(self) -> None:
        spec = parse_hook("webhook", "record_done, publish_start=http://127.0.0.1:8080/h?a=b&c=d")
        self.assertEqual(spec.events, frozenset({"record_done", "publish_start"}))
        self.assertEqual(spec.target, "http://127.0.0.1:8080/h?a=b&c=d")
        self.assertEqual(parse_hook("exec", "*=env X=1 ./x.sh").events, frozenset(EVENT_NAMES))
        self.assertEqual(parse_hook("exec", "*=env X=1 ./x.sh").target, "env X=1 ./x.sh")
        self.assertTrue(spec.wants("record_done"))
        self.assertFalse(spec.wants("connect"))

    def test_describe_hides_password_and_query(self) -> None:
        spec = parse_hook("webhook", "*=https://user:pw@example.test:8443/hook?token=x")
        self.assertEqual(spec.describe(), "webhook * -> https://example.test:8443/hook")

    def test_errors_are_one_clear_line(self) -> None:
        cases = {
            ("webhook", "http://x/"): "expected EVENTS=TARGET",
            ("webhook", "publish_begin=http://x/"): "unknown event 'publish_begin'",
            ("webhook", "connect,,play_start=http://x/"): "empty event name",
            ("webhook", "connect="): "no URL after '='",
            ("exec", "connect=  "): "no command after '='",
            ("webhook", "connect=ftp://x/"): "must start with http:// or https://",
            ("webhook", "connect=http:///path"): "has no host",
            ("webhook", "connect=http://x:99999/"): "bad webhook URL",
        }
        for (kind, text), expected in cases.items():
            with self.assertRaises(HookConfigError) as caught:
                parse_hook(kind, text)
            message = str(caught.exception)
            self.assertIn(expected, message, (kind, text))
            self.assertNotIn("\n", message)


class SignatureTests(SynchronousTestCase):
    def test_sign_and_verify(self) -> None:
        body = b'{"event":"connect"}'
        header = sign(body, SECRET)
        self.assertEqual(header, "sha256=" + __import__("hmac").new(SECRET, body, "sha256").hexdigest())
        self.assertTrue(verify(body, header, SECRET))
        self.assertFalse(verify(body + b" ", header, SECRET))
        self.assertFalse(verify(body, header, b"other"))
        self.assertFalse(verify(body, None, SECRET))
        self.assertFalse(verify(body, "sha256=\u00e9", SECRET))

    def test_secret_file(self) -> None:
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        path = os.path.join(tmp, "secret")
        with open(path, "wb") as f:
            f.write(SECRET + b"\n")
        self.assertEqual(read_secret(path), SECRET)
        with open(path, "wb") as f:
            f.write(b" \n")
        self.assertRaisesRegex(HookConfigError, "empty", read_secret, path)
        with open(path, "wb") as f:
            f.write(b"x" * 5000)
        self.assertRaisesRegex(HookConfigError, "longer than", read_secret, path)
        self.assertRaisesRegex(HookConfigError, "No such file", read_secret, path + ".missing")


class BackoffTests(SynchronousTestCase):
    def test_exponential_capped_with_equal_jitter(self) -> None:
        low = Backoff(1.0, 10.0, random=lambda: 0.0)
        high = Backoff(1.0, 10.0, random=lambda: 0.999999)
        self.assertEqual([low.delay(n) for n in range(1, 7)], [0.5, 1.0, 2.0, 4.0, 5.0, 5.0])
        self.assertEqual([round(high.delay(n), 3) for n in range(1, 7)], [1.0, 2.0, 4.0, 8.0, 10.0, 10.0])
        self.assertEqual(low.delay(10_000), 5.0)
        self.assertRaises(ValueError, Backoff, 2.0, 1.0)


# -- the webhook sink on a fake clock and a fake HTTP ----------------------------------------------


class FakePost:
    """Records each POST and answers it when the test says."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes, dict[str, str], defer.Deferred]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.requests.append((url, body, dict(headers), d))
        return d

    def names(self) -> list[str]:
        return [json.loads(body)["event"] for _, body, _, _ in self.requests]

    def answer(self, index: int, status: int) -> None:
        self.requests[index][3].callback(status)

    def refuse(self, index: int) -> None:
        self.requests[index][3].errback(ConnectionRefusedError("nobody there"))


class WebhookSinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.post = FakePost()
        self.sink = self.make_sink()

    def make_sink(self, events: str = "*", queue_size: int = 10, retries: int = 3) -> WebhookSink:
        return WebhookSink(
            parse_hook("webhook", f"{events}=http://127.0.0.1:9/hook"),
            secret=SECRET,
            post=self.post,
            clock=self.clock,
            queue_size=queue_size,
            retries=retries,
            backoff=Backoff(1.0, 4.0, random=lambda: 0.0),
            timeout=5.0,
        )

    def test_one_at_a_time_in_order_signed(self) -> None:
        for n, name in enumerate(["connect", "publish_start", "publish_stop"]):
            self.assertTrue(self.sink.offer(event(name, n)))
        self.assertEqual(self.post.requests, [], "nothing is sent inside the emit")
        self.clock.advance(0)
        self.assertEqual(self.post.names(), ["connect"])
        self.post.answer(0, 200)
        self.clock.advance(0)
        self.assertEqual(self.post.names(), ["connect", "publish_start"])
        self.post.answer(1, 204)
        self.clock.advance(0)
        self.post.answer(2, 200)
        self.assertEqual(self.post.names(), ["connect", "publish_start", "publish_stop"])
        self.assertEqual(self.sink.counts.as_dict(), {"ok": 3, "retry": 0, "failed": 0, "dropped": 0})
        url, body, headers, _ = self.post.requests[1]
        self.assertEqual(url, "http://127.0.0.1:9/hook")
        self.assertEqual(
            json.loads(body),
            {"id": "id1", "event": "publish_start", "time": 1001.0, "stream_key": "live/cam"},
        )
        self.assertTrue(verify(body, headers["X-Rtmpd-Signature"], SECRET))
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual((headers["X-Rtmpd-Event"], headers["X-Rtmpd-Delivery"]), ("publish_start", "id1"))

    def test_only_the_events_asked_for(self) -> None:
        sink = self.make_sink("record_done,publish_stop")
        self.assertFalse(sink.offer(event("connect")))
        self.assertTrue(sink.offer(event("record_done")))
        self.assertEqual(sink.counts.dropped, 0)

    def test_retries_with_backoff_then_delivers_in_order(self) -> None:
        self.sink.offer(event("connect", 0))
        self.sink.offer(event("disconnect", 1))
        self.clock.advance(0)
        self.post.refuse(0)
        self.assertEqual(len(self.post.requests), 1)
        self.clock.advance(0.49)  # the first retry waits base/2 .. base
        self.assertEqual(len(self.post.requests), 1)
        self.clock.advance(0.01)
        self.assertEqual(self.post.names(), ["connect", "connect"])
        self.assertEqual(self.post.requests[1][2]["X-Rtmpd-Attempt"], "2")
        self.post.answer(1, 503)
        self.clock.advance(0.99)
        self.assertEqual(len(self.post.requests), 2)
        self.clock.advance(0.01)
        self.post.answer(2, 200)
        self.clock.advance(0)
        self.assertEqual(self.post.names(), ["connect", "connect", "connect", "disconnect"])
        self.assertEqual(self.post.requests[3][2]["X-Rtmpd-Attempt"], "1")
        self.assertEqual(self.sink.counts.as_dict(), {"ok": 1, "retry": 2, "failed": 0, "dropped": 0})

    def test_gives_up_after_the_retries_and_goes_on(self) -> None:
        self.sink.offer(event("connect", 0))
        self.sink.offer(event("disconnect", 1))
        self.clock.advance(0)
        with capturedLogs() as logs:
            for attempt in range(4):
                self.post.answer(attempt, 500)
                self.clock.advance(4.0)
        self.assertEqual(self.post.names(), ["connect"] * 4 + ["disconnect"])
        self.assertEqual(self.sink.counts.as_dict(), {"ok": 0, "retry": 3, "failed": 1, "dropped": 0})
        given_up = [e for e in logs if e["log_format"] == "Webhook delivery failed; event given up"]
        self.assertEqual(len(given_up), 1)
        self.assertIn("HTTP 500 after 4 attempts", given_up[0]["reason"])

    def test_a_refusal_is_not_retried(self) -> None:
        self.sink.offer(event("connect", 0))
        self.clock.advance(0)
        self.post.answer(0, 403)
        self.clock.advance(60)
        self.assertEqual(len(self.post.requests), 1)
        self.assertEqual(self.sink.counts.as_dict(), {"ok": 0, "retry": 0, "failed": 1, "dropped": 0})

    def test_full_queue_drops_and_counts_within_bound_nothing_lost(self) -> None:
        sink = self.make_sink(queue_size=3, retries=100)
        with capturedLogs() as logs:
            queued = [sink.offer(event("connect", n)) for n in range(5)]
        self.assertEqual(queued, [True, True, True, False, False])
        self.assertEqual(sink.counts.dropped, 2)
        self.assertEqual(
            [e["log_format"] for e in logs].count("Hook queue full; dropping events until it has room"), 1
        )
        self.clock.advance(0)
        for _ in range(5):  # the receiver is down a while
            self.post.refuse(len(self.post.requests) - 1)
            self.clock.advance(4.0)
        for _ in range(3):
            self.post.answer(len(self.post.requests) - 1, 200)
            self.clock.advance(0)
        ids = [json.loads(body)["id"] for _, body, _, d in self.post.requests if d.called]
        self.assertEqual(sorted(set(ids)), ["id0", "id1", "id2"])
        self.assertEqual(sink.counts.as_dict(), {"ok": 3, "retry": 5, "failed": 0, "dropped": 2})
        with capturedLogs() as logs:
            self.assertTrue(sink.offer(event("connect", 9)))
        self.assertEqual(logs[0]["log_format"], "Hook queue has room again")
        self.assertEqual(logs[0]["dropped"], 2)

    def test_a_post_that_raises_is_a_failed_attempt(self) -> None:
        def broken(*args: Any) -> defer.Deferred:
            raise RuntimeError("bug")

        sink = self.make_sink(retries=0)
        sink._post = broken  # noqa: SLF001 (the double is the point)
        sink.offer(event("connect"))
        with capturedLogs():
            self.clock.advance(0)
        self.assertEqual(sink.counts.failed, 1)
        self.flushLoggedErrors(RuntimeError)

    def test_stop_gives_up_the_queue_and_cancels(self) -> None:
        for n in range(3):
            self.sink.offer(event("connect", n))
        self.clock.advance(0)
        in_flight = self.post.requests[0][3]
        in_flight.addErrback(lambda f: None)
        idle = self.sink.when_idle()
        self.assertFalse(idle.called)
        self.sink.stop()
        self.assertTrue(in_flight.called)
        self.assertTrue(idle.called)
        self.assertEqual(self.sink.counts.dropped, 3)
        self.assertFalse(self.sink.offer(event("connect", 4)))


# -- treq against a stub HTTP server ---------------------------------------------------------------


class Receiver(resource.Resource):
    isLeaf = True

    def __init__(self, status: int = 200, hang: bool = False, body: bytes = b"") -> None:
        super().__init__()
        self.status, self.hang, self.body = status, hang, body
        self.seen: list[tuple[bytes, dict[bytes, list[bytes]]]] = []

    def render_POST(self, request: server.Request) -> Any:
        self.seen.append((request.content.read(), dict(request.requestHeaders.getAllRawHeaders())))
        if self.hang:
            return server.NOT_DONE_YET
        request.setResponseCode(self.status)
        if self.status == 302:
            request.setHeader(b"Location", b"http://127.0.0.1:9/elsewhere")
        return self.body


class TreqPosterTests(SynchronousTestCase):
    def post(self, receiver: Receiver, clock: Clock | None = None) -> tuple[list, Any]:
        from treq.testing import StubTreq

        stub = StubTreq(receiver)
        poster = TreqPoster(stub, clock or Clock(), max_response_bytes=100)
        results: list = []
        poster("http://127.0.0.1:9/hook", b'{"a":1}', {"X-Rtmpd-Signature": "sha256=00"}, 5.0).addBoth(
            results.append
        )
        stub.flush()
        return results, stub

    def test_status_body_and_headers(self) -> None:
        receiver = Receiver(202, body=b"x" * 1000)
        results, _ = self.post(receiver)
        self.assertEqual(results, [202])
        body, headers = receiver.seen[0]
        self.assertEqual(body, b'{"a":1}')
        self.assertEqual(headers[b"X-Rtmpd-Signature"], [b"sha256=00"])

    def test_redirect_is_an_answer_not_followed(self) -> None:
        receiver = Receiver(302)
        results, _ = self.post(receiver)
        self.assertEqual(results, [302])
        self.assertEqual(len(receiver.seen), 1)

    def test_timeout_cancels(self) -> None:
        clock = Clock()
        results, stub = self.post(Receiver(hang=True), clock)
        self.assertEqual(results, [])
        clock.advance(5.0)
        stub.flush()
        self.assertEqual(len(results), 1)
        self.assertTrue(results[0].check(WebhookTimeout), results[0])
        self.assertEqual(str(results[0].value), "no answer within 5 s")

    def test_failures_described_in_one_line(self) -> None:
        from twisted.python.failure import Failure
        from twisted.web._newclient import ResponseNeverReceived

        wrapped = Failure(ResponseNeverReceived([Failure(ConnectionRefusedError("nobody"))]))
        self.assertEqual(
            describe_failure(wrapped), "ConnectionRefusedError: Connection was refused by other side: nobody."
        )
        self.assertEqual(
            describe_failure(Failure(WebhookTimeout("no answer within 1 s"))), "no answer within 1 s"
        )


# -- the exec sink -----------------------------------------------------------------------------------


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stdin = b""
        self.stdin_closed = False
        self.lost = False

    def write(self, data: bytes) -> None:
        self.stdin += data

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def loseConnection(self) -> None:
        self.lost = True


class FakeSpawn:
    def __init__(self) -> None:
        self.runs: list[tuple[Any, str, list[str], dict[str, str], FakeProcess]] = []

    def __call__(self, handler: Any, executable: str, args: list[str], env: dict[str, str]) -> FakeProcess:
        process = FakeProcess(1000 + len(self.runs))
        self.runs.append((handler, executable, args, env, process))
        return process

    def end(self, index: int, code: int = 0) -> None:
        from twisted.internet.error import ProcessDone, ProcessTerminated
        from twisted.python.failure import Failure

        handler = self.runs[index][0]
        reason = Failure(ProcessDone(0) if code == 0 else ProcessTerminated(code))
        handler.processExited(reason)
        handler.processEnded(reason)


class ExecSinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.spawn = FakeSpawn()
        self.kills: list[tuple[int, int]] = []
        self.sink = ExecSink(
            parse_hook("exec", "record_done,connect=./on-event.sh"),
            spawn=self.spawn,
            clock=self.clock,
            queue_size=2,
            concurrency=2,
            timeout=30.0,
            environ={"PATH": "/usr/bin"},
            kill=lambda pid, sig: self.kills.append((pid, sig)),
        )

    def test_environment_stdin_and_shell_in_a_new_group(self) -> None:
        self.sink.offer(event("record_done", path="/rec/a.flv", duration=12.5, bytes=1234, error=None))
        self.clock.advance(0)
        handler, executable, args, env, process = self.spawn.runs[0]
        self.assertEqual(args[-3:], ["/bin/sh", "-c", "./on-event.sh"])
        self.assertIn("setsid", args[args.index("-c") + 1])
        self.assertEqual(executable, sys.executable)
        self.assertEqual(env["PATH"], "/usr/bin")
        expected = {
            "RTMPD_EVENT": "record_done",
            "RTMPD_EVENT_ID": "id0",
            "RTMPD_TIME": "1000.0",
            "RTMPD_STREAM_KEY": "live/cam",
            "RTMPD_PATH": "/rec/a.flv",
            "RTMPD_DURATION": "12.5",
            "RTMPD_BYTES": "1234",
            "RTMPD_ERROR": "",
        }
        self.assertEqual({k: v for k, v in env.items() if k.startswith("RTMPD_")}, expected)
        self.assertEqual(json.loads(process.stdin)["path"], "/rec/a.flv")
        self.assertTrue(process.stdin_closed)
        self.spawn.end(0)
        self.assertEqual(self.sink.counts.as_dict(), {"ok": 1, "retry": 0, "failed": 0, "dropped": 0})

    def test_environment_of_other_values(self) -> None:
        env = event_environment(
            event("codec_detected", video={"width": 640}, ok=True, flash_ver="a\x00b", tracks=[1]), {}
        )
        self.assertEqual(env["RTMPD_VIDEO"], '{"width":640}')
        self.assertEqual((env["RTMPD_OK"], env["RTMPD_FLASH_VER"], env["RTMPD_TRACKS"]), ("1", "ab", "[1]"))

    def test_bounded_concurrency_then_queue_then_dropped(self) -> None:
        results = [self.sink.offer(event("connect", n)) for n in range(5)]
        self.clock.advance(0)
        # Before the sink's turn the queue (2) holds two; then both run, and the queue has room again.
        self.assertEqual(len(self.spawn.runs), 2)
        self.assertEqual(results, [True, True, False, False, False])
        self.assertEqual(self.sink.counts.dropped, 3)
        self.assertTrue(self.sink.offer(event("connect", 5)))
        self.assertTrue(self.sink.offer(event("connect", 6)))
        self.assertFalse(self.sink.offer(event("connect", 7)))
        self.spawn.end(0)
        self.clock.advance(0)
        self.assertEqual(len(self.spawn.runs), 3)
        self.spawn.end(1, code=3)
        self.clock.advance(0)
        self.assertEqual(len(self.spawn.runs), 4)
        ids = [json.loads(run[4].stdin)["id"] for run in self.spawn.runs]
        self.assertEqual(ids, ["id0", "id1", "id5", "id6"])
        self.assertEqual(self.sink.counts.as_dict(), {"ok": 1, "retry": 0, "failed": 1, "dropped": 4})

    def test_timeout_signals_the_group_then_kills(self) -> None:
        self.sink.offer(event("connect"))
        self.clock.advance(0)
        with capturedLogs():
            self.clock.advance(30.0)
            self.assertEqual(self.kills, [(1000, signal.SIGTERM)])
            self.clock.advance(2.0)
            self.assertEqual(self.kills, [(1000, signal.SIGTERM), (1000, signal.SIGKILL)])
            self.assertTrue(self.spawn.runs[0][4].lost)
            self.spawn.end(0, code=1)
        self.assertEqual(self.sink.counts.failed, 1)

    def test_spawn_failure_is_failed(self) -> None:
        def cannot(*args: Any, **kwargs: Any) -> None:
            raise OSError(24, "Too many open files")

        self.sink._spawn = cannot  # noqa: SLF001
        with capturedLogs() as logs:
            self.sink.offer(event("connect"))
            self.clock.advance(0)
        self.assertEqual(self.sink.counts.failed, 1)
        self.assertIn("Hook command could not start", [e["log_format"] for e in logs])
        self.assertEqual(self.sink.running, set())


class LineLimiterTests(SynchronousTestCase):
    def test_lines_split_cut_and_counted(self) -> None:
        lines: list[str] = []
        budget = [4]
        limiter = LineLimiter(lines.append, budget, max_line=5)
        limiter.feed(b"ab")
        limiter.feed(b"c\nlong line here\r\nx")
        limiter.feed(b"\n\xff\nrest")
        limiter.close()
        self.assertEqual(lines, ["abc", "long  [cut]", "x", "\ufffd"])
        self.assertEqual(limiter.omitted, 1)

    def test_an_endless_line_holds_bounded_memory(self) -> None:
        lines: list[str] = []
        limiter = LineLimiter(lines.append, [MAX_LINES], max_line=10)
        for _ in range(1000):
            limiter.feed(b"y" * 1000)
        self.assertLessEqual(len(limiter._partial), 10)  # noqa: SLF001
        self.assertEqual(lines, ["y" * 10 + " [cut]"])


class RealCommandTests(TestCase):
    """Real ``/bin/sh`` commands on the real reactor."""

    timeout = 30

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rtmpd-hooks-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def sink(self, command: str, timeout: float = 10.0) -> ExecSink:
        return ExecSink(
            parse_hook("exec", f"*={command}"),
            spawn=reactor.spawnProcess,
            clock=reactor,
            queue_size=10,
            concurrency=1,
            timeout=timeout,
        )

    async def test_event_in_environment_and_on_stdin_output_logged(self) -> None:
        out = os.path.join(self.tmp, "out")
        sink = self.sink(
            f'printf "%s|%s\\n" "$RTMPD_EVENT" "$RTMPD_PATH" > {out}; cat >> {out}; echo done; echo oops >&2'
        )
        with capturedLogs() as logs:
            sink.offer(event("record_done", path="/rec/it's here.flv", duration=3.0))
            await sink.when_idle()
        with open(out) as f:
            first, second = f.read().splitlines()
        self.assertEqual(first, "record_done|/rec/it's here.flv")
        self.assertEqual(json.loads(second)["duration"], 3.0)
        output = [(e["stream"], e["line"]) for e in logs if e["log_format"].startswith("Hook output")]
        self.assertEqual(sorted(output), [("stderr", "oops"), ("stdout", "done")])
        self.assertEqual(sink.counts.ok, 1)

    async def test_timeout_kills_the_whole_group(self) -> None:
        pidfile = os.path.join(self.tmp, "child")
        # The shell starts a child that ignores nothing and would outlive a kill of the shell alone.
        sink = self.sink(f"sleep 60 & echo $! > {pidfile}; wait", timeout=1.0)
        with capturedLogs() as logs:
            sink.offer(event("connect"))
            await sink.when_idle()
        self.assertEqual(sink.counts.failed, 1)
        with open(pidfile) as f:
            child = int(f.read())
        # The child was in the group: it is gone (or a zombie of a dead parent, reaped by init).
        for _ in range(50):
            if not _alive(child):
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(_alive(child), f"pid {child} survived the timeout")
        failed = [e for e in logs if e["log_format"] == "Hook command failed"]
        self.assertIn("timed out after 1 s", failed[0]["reason"])

    async def test_output_is_bounded(self) -> None:
        sink = self.sink("yes line | head -n 500; head -c 100000 /dev/zero | tr '\\0' x")
        with capturedLogs() as logs:
            sink.offer(event("connect"))
            await sink.when_idle()
        lines = [e["line"] for e in logs if e["log_format"].startswith("Hook output:")]
        self.assertEqual(len(lines), MAX_LINES)
        cut = [e for e in logs if e["log_format"] == "Hook output cut"]
        self.assertEqual(cut[0]["omitted_lines"], 500 + 1 - MAX_LINES)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- the service -------------------------------------------------------------------------------------


class HookServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.notifier = Notifier(self.clock.seconds)
        self.post = FakePost()
        self.webhook = WebhookSink(
            parse_hook("webhook", "publish_start,record_done=http://127.0.0.1:9/"),
            secret=SECRET,
            post=self.post,
            clock=self.clock,
            queue_size=10,
            retries=0,
            backoff=Backoff(1, 1),
            timeout=5,
        )
        self.spawn = FakeSpawn()
        self.command = ExecSink(
            parse_hook("exec", "record_done=true"),
            spawn=self.spawn,
            clock=self.clock,
            queue_size=10,
            concurrency=1,
            timeout=5,
            kill=lambda pid, sig: None,
        )
        self.before: defer.Deferred = defer.Deferred()
        self.stopped: list[bool] = []
        ids = iter(range(100))
        self.service = HookService(
            self.notifier,
            [self.webhook, self.command],
            self.clock,
            shutdown_grace=10.0,
            before_drain=lambda: self.before,
            on_stopped=lambda: self.stopped.append(True),
            new_id=lambda: f"e{next(ids)}",
        )
        self.service.startService()

    def test_events_to_the_sinks_that_want_them_one_id_each(self) -> None:
        self.notifier.emit("connect", conn_id="c1")
        self.notifier.emit("publish_start", stream_key="live/a")
        self.notifier.emit("record_done", path="/r/a.flv", duration=1.0, bytes=10, error=None)
        self.clock.advance(0)
        self.assertEqual(self.post.names(), ["publish_start"])
        self.post.answer(0, 200)
        self.clock.advance(0)
        self.assertEqual(self.post.names(), ["publish_start", "record_done"])
        self.assertEqual(json.loads(self.post.requests[1][1])["id"], "e1")
        self.assertEqual(json.loads(self.spawn.runs[0][4].stdin)["id"], "e1")
        self.post.answer(1, 500)
        self.spawn.end(0)
        deliveries = self.service.deliveries()
        self.assertEqual(deliveries[("webhook", "ok")], 1)
        self.assertEqual(deliveries[("webhook", "failed")], 1)
        self.assertEqual(deliveries[("exec", "ok")], 1)
        self.assertEqual(len(deliveries), 8)

    def test_stop_waits_for_recordings_then_drains(self) -> None:
        d = self.service.stopService()
        self.clock.advance(1)
        self.assertFalse(d.called)
        # A recording finalized during shutdown announces itself, then the recorder is done.
        self.notifier.emit("record_done", path="/r/a.flv", duration=1.0, bytes=10, error=None)
        self.before.callback(None)
        self.clock.advance(0)
        self.assertFalse(d.called)
        self.post.answer(0, 200)
        self.assertFalse(d.called)
        self.spawn.end(0)
        self.assertTrue(d.called)
        self.assertEqual(self.stopped, [True])
        self.assertEqual(self.webhook.counts.ok, 1)
        self.assertEqual(self.command.counts.ok, 1)
        self.notifier.emit("publish_start", stream_key="live/a")
        self.assertEqual(len(self.webhook.queue), 0)

    def test_stop_gives_up_after_the_grace(self) -> None:
        self.notifier.emit("publish_start", stream_key="live/a")
        self.notifier.emit("publish_start", stream_key="live/b")
        self.clock.advance(0)
        self.post.requests[0][3].addErrback(lambda f: None)
        d = self.service.stopService()
        self.before.callback(None)
        with capturedLogs() as logs:
            self.clock.advance(10.0)
        self.assertTrue(d.called)
        self.assertEqual(self.webhook.counts.dropped, 2)
        self.assertIn("Hook events not delivered before shutdown", [e["log_format"] for e in logs])


# -- options and wiring ------------------------------------------------------------------------------


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)
        self.secret = os.path.join(self.tmp, "secret")
        with open(self.secret, "wb") as f:
            f.write(SECRET + b"\n")

    def parse(self, *args: str):
        from rtmpd.tap import Options

        options = Options()
        options.parseOptions(list(args))
        return options

    def test_hooks_and_limits_parsed(self) -> None:
        options = self.parse(
            "--hook-webhook", "*=http://127.0.0.1:8080/h",
            "--hook-exec", "record_done=./up.sh",
            "--hook-exec", "publish_start,publish_stop=logger x",
            "--hook-secret-file", self.secret,
            "--hook-queue-size", "5", "--hook-retries", "0", "--hook-timeout", "2.5",
        )  # fmt: skip
        settings = options.hook_settings
        self.assertEqual([h.kind for h in settings.hooks], ["webhook", "exec", "exec"])
        self.assertEqual(settings.hooks[2].events, frozenset({"publish_start", "publish_stop"}))
        self.assertEqual((settings.queue_size, settings.retries, settings.timeout), (5, 0, 2.5))
        self.assertEqual(settings.backoff, HookSettings().backoff)
        self.assertTrue(settings.enabled)
        self.assertFalse(self.parse().hook_settings.enabled)

    def test_errors_are_one_line(self) -> None:
        cases = [
            (["--hook-webhook", "*=http://x/"], "--hook-webhook needs --hook-secret-file"),
            (["--hook-webhook", "conect=http://x/"], "--hook-webhook: unknown event 'conect'"),
            (["--hook-exec", "record_done"], "--hook-exec: expected EVENTS=TARGET"),
            (["--hook-queue-size", "0"], "must be an integer >= 1"),
            (["--hook-timeout", "soon"], "must be a number of seconds > 0"),
            (
                ["--hook-backoff", "5", "--hook-backoff-max", "1"],
                "--hook-backoff-max must be >= --hook-backoff",
            ),
            (
                ["--hook-webhook", "*=http://x/", "--hook-secret-file", self.secret + ".missing"],
                "--hook-secret-file",
            ),
        ]
        for args, expected in cases:
            with self.assertRaises(SystemExit) as caught:
                self.parse(*args)
            message = str(caught.exception.code)
            self.assertTrue(message.startswith("rtmpd: error: "), message)
            self.assertIn(expected, message)
            self.assertNotIn("\n", message)

    def test_mixin_alone(self) -> None:
        class Bare(HookOptions, usage.Options):
            optParameters = __import__("rtmpd.hooks.options", fromlist=["x"]).HOOK_PARAMETERS

            def __init__(self) -> None:
                super().__init__()
                self.init_hooks()

        bare = Bare()
        bare.parseOptions(["--hook-exec", "connect=true"])
        self.assertEqual(len(bare.hook_settings_from_options().hooks), 1)

    def test_make_service_adds_the_hook_service_without_http(self) -> None:
        from rtmpd.hooks.command import ExecSink
        from rtmpd.hooks.webhook import WebhookSink
        from rtmpd.tap import makeService

        top = makeService(
            self.parse(
                "--hook-webhook", "*=http://127.0.0.1:8080/h", "--hook-secret-file", self.secret,
                "--hook-exec", "record_done=true",
            )
        )  # fmt: skip
        hooks = top.getServiceNamed("hooks")
        self.assertEqual([type(s) for s in hooks.sinks], [WebhookSink, ExecSink])
        self.assertEqual(hooks.sinks[0].secret, SECRET)
        self.assertIs(hooks.notifier, top.registry.notifier)
        self.assertRaises(KeyError, makeService(self.parse()).getServiceNamed, "hooks")


# -- the recording's events --------------------------------------------------------------------------


class RecordingEventTests(RecorderTestCase):
    def test_record_start_and_done_with_path_duration_bytes(self) -> None:
        events: list[ServerEvent] = []
        self.server.registry.notifier.subscribe(events.append)
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=3)
        recording = self.unpublish(pub)
        path = "/rec/live_test_20231114_221320.flv"
        recorded = [e for e in events if e.name.startswith("record_")]
        self.assertEqual([e.name for e in recorded], ["record_start", "record_done"])
        self.assertEqual(
            dict(recorded[0].fields),
            {"stream_key": "live/test", "app": "live", "name": "test", "path": path, "segment": 1},
        )
        done = dict(recorded[1].fields)
        self.assertEqual(done["path"], path)
        self.assertEqual(done["duration"], 2.9)
        self.assertEqual(done["bytes"], len(self.data(path)))
        self.assertIsNone(done["error"])
        self.assertEqual(recording.state, "finished")
        self.assertGreaterEqual(recorded[1].time, EPOCH)


class SegmentedRecordingEventTests(RecorderTestCase):
    record_config = {"record_interval": 1.0}

    def test_each_segment_starts_and_ends(self) -> None:
        events: list[ServerEvent] = []
        self.server.registry.notifier.subscribe(events.append)
        pub, sid = self.publisher()
        self.send_headers(pub, sid)
        self.send_gops(pub, sid, 0, gops=3)
        self.unpublish(pub)
        names = [e.name for e in events if e.name.startswith("record_")]
        self.assertEqual(names, ["record_start", "record_done"] * 3)
        done = [e.fields for e in events if e.name == "record_done"]
        self.assertEqual(len({d["path"] for d in done}), 3)
        self.assertEqual([d["bytes"] for d in done], [len(self.data(d["path"])) for d in done])

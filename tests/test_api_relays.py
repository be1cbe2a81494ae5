"""The push and pull relays in the JSON API: rules and destinations shown, rules added, removed, restarted."""

from __future__ import annotations

import json

from twisted.internet.defer import fail

from rtmpd.remote.backoff import Backoff
from rtmpd.remote.push import PushService
from tests.test_api import TOKEN, APITestCase


class RelayAPITests(APITestCase):
    def setUp(self) -> None:
        super().setUp()
        self.attempts: list[str] = []

        def connect(destination, rule):
            self.attempts.append(destination.url.redacted())
            return fail(ConnectionRefusedError("nobody listens there"))

        self.push = PushService(
            self.top.registry,
            self.server.clock,
            connect,
            grace=5.0,
            max_queue_bytes=1 << 20,
            stall_timeout=5.0,
            backoff=lambda: Backoff(uniform=lambda low, high: high),
        )
        self.push.setServiceParent(self.top)

    async def test_rules_and_destinations_through_the_api(self) -> None:
        relays = (await self.get("relays"))["relays"]
        self.assertEqual(relays["push"], {"rules": [], "destinations": []})
        self.assertEqual(relays["pull"], {"rules": {}, "upstreams": []})

        body = json.dumps({"pattern": "live/*", "url": "rtmp://127.0.0.1:9/out/{name}"}).encode()
        status, _, answer = await self.request("POST", "relays/push", body)
        self.assertEqual(status, 401, answer)
        self.assertEqual(self.push.rules(), [])
        status, _, answer = await self.post("relays/push", body)
        self.assertEqual((status, answer["ok"]), (200, True), answer)
        rule = answer["rule"]
        self.assertEqual(self.attempts, ["rtmp://127.0.0.1:9/out/test"])

        relays = (await self.get("relays"))["relays"]
        self.assertEqual([r["id"] for r in relays["push"]["rules"]], [rule])
        (destination,) = relays["push"]["destinations"]
        self.assertEqual((destination["stream_key"], destination["rule"]), ("live/test", rule))
        self.assertIn("nobody listens there", destination["last_error"])

        status, _, answer = await self.post(f"relays/push/{rule}/restart")
        self.assertEqual((status, answer["restarted"]), (200, 1), answer)
        self.assertEqual(len(self.attempts), 2)

        bad = json.dumps({"pattern": "live/*", "url": "http://example.invalid/x"}).encode()
        status, _, answer = await self.post("relays/push", bad)
        self.assertEqual(status, 409, answer)
        self.assertIn("bad push rule", answer["error"]["message"])
        status, _, answer = await self.post("relays/push", b'{"pattern": "live/*"}')
        self.assertEqual(status, 409, answer)

        status, _, answer = await self.post("relays/push/99/remove")
        self.assertEqual(status, 404, answer)
        status, _, answer = await self.post(f"relays/push/{rule}/remove")
        self.assertEqual(status, 200, answer)
        relays = (await self.get("relays", token=TOKEN))["relays"]
        self.assertEqual(relays["push"], {"rules": [], "destinations": []})
        self.assertRTMPGoesOn()

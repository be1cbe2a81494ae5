"""The in-process stream directory: claims, expiry, takeover, release."""

from twisted.trial.unittest import SynchronousTestCase

from rtmpd.cluster.directory import ClaimTable, LocalDirectory, Node

A = Node("a", "rtmp://127.0.0.2:1935")
B = Node("b", "rtmp://127.0.0.3:1935")


class ClaimTableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.now = 100.0
        self.table = ClaimTable(lambda: self.now, ttl=5.0)
        self.a = LocalDirectory(self.table, A)
        self.b = LocalDirectory(self.table, B)

    def test_first_claim_wins_and_second_sees_owner(self) -> None:
        self.assertEqual(self.successResultOf(self.a.claim("live/x")), A)
        self.assertEqual(self.successResultOf(self.b.claim("live/x")), A)
        self.assertEqual(self.successResultOf(self.b.lookup("live/x")), A)

    def test_takeover_moves_claim_and_old_owner_cannot_refresh(self) -> None:
        self.a.claim("live/x")
        self.assertEqual(self.successResultOf(self.b.claim("live/x", takeover=True)), B)
        self.assertFalse(self.successResultOf(self.a.refresh("live/x")))
        self.assertTrue(self.successResultOf(self.b.refresh("live/x")))

    def test_claim_expires_without_refresh(self) -> None:
        self.a.claim("live/x")
        self.now += 4.9
        self.assertTrue(self.successResultOf(self.a.refresh("live/x")))
        self.now += 4.9
        self.assertEqual(self.successResultOf(self.b.lookup("live/x")), A)
        self.now += 0.2
        self.assertIsNone(self.successResultOf(self.b.lookup("live/x")))
        self.assertEqual(self.successResultOf(self.b.claim("live/x")), B)

    def test_release_only_by_owner(self) -> None:
        self.a.claim("live/x")
        self.b.release("live/x")
        self.assertEqual(self.successResultOf(self.a.lookup("live/x")), A)
        self.a.release("live/x")
        self.assertEqual(self.successResultOf(self.a.claims()), {})

    def test_release_node_drops_every_claim_of_a_dead_node(self) -> None:
        self.a.claim("live/x")
        self.a.claim("live/y")
        self.b.claim("live/z")
        self.assertEqual(sorted(self.table.release_node("a")), ["live/x", "live/y"])
        self.assertEqual(self.successResultOf(self.a.claims()), {"live/z": B})

    def test_node_encoding_round_trips_and_rejects_garbage(self) -> None:
        self.assertEqual(Node.decode(A.encode()), A)
        for text in ("", "a", " rtmp://x", "a "):
            self.assertRaises(ValueError, Node.decode, text)

"""The push micro benchmark (``benchmarks.push_micro``) still measures what it says: both setups deliver."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from benchmarks.push_micro import Setup, measure, stream_messages
from rtmpd.core.messages import MessageType


class PushMicroBenchmarkTests(SynchronousTestCase):
    def test_the_synthetic_stream_is_3_mbps_with_a_keyframe_every_2_s(self) -> None:
        messages = stream_messages(4)
        video = [m for m in messages if m.type_id == MessageType.VIDEO]
        self.assertEqual(len(video), 120)
        self.assertEqual([m.timestamp for m in video if m.payload[0] == 0x17], [0, 2000])
        bits = sum(len(m.payload) for m in video) * 8 / 4
        self.assertLess(abs(bits / 3_000_000 - 1.0), 0.01)
        self.assertEqual([m.timestamp for m in messages], sorted(m.timestamp for m in messages))

    def test_players_and_destinations_get_the_same_bytes(self) -> None:
        messages = stream_messages(2)
        players = measure("players", 3, messages, False)
        push = measure("push", 3, messages, False)
        # Every frame to each of the 3 outputs: the payloads plus one 12-byte header per message.
        payload = sum(len(m.payload) for m in messages)
        self.assertGreater(players["delivered"], 3 * payload)
        self.assertEqual(push["delivered"], players["delivered"])

    def test_push_setup_has_three_publishing_destinations_on_sinks(self) -> None:
        setup = Setup("push", 3)
        self.assertEqual(len(setup.sinks), 3)
        self.assertEqual([d["state"] for d in setup.push.destinations()], ["publishing"] * 3)

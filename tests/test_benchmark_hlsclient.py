"""The benchmark's LL-HLS viewer reads playlists as the spec writes them and asks for the right next part."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from benchmarks.hlsclient import Playlist

PLAYLIST = """#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0
#EXT-X-PART-INF:PART-TARGET=0.333
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-MAP:URI="init.mp4?token=a,b"
#EXT-X-PART:DURATION=0.333,URI="7.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.333,URI="7.1.m4s"
#EXTINF:0.666,
7.m4s
#EXT-X-PART:DURATION=0.333,URI="8.0.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="8.1.m4s"
"""


class PlaylistTests(SynchronousTestCase):
    def test_parts_by_sequence_and_index(self) -> None:
        playlist = Playlist.parse(PLAYLIST)
        self.assertEqual(playlist.init_uri, "init.mp4?token=a,b")
        self.assertEqual(playlist.parts, {(7, 0): "7.0.m4s", (7, 1): "7.1.m4s", (8, 0): "8.0.m4s"})
        self.assertEqual(playlist.complete, {7})
        self.assertEqual(max(playlist.parts), (8, 0))

    def test_next_part_crosses_a_complete_segment_only(self) -> None:
        playlist = Playlist.parse(PLAYLIST)
        self.assertEqual(playlist.next_after((7, 0)), (7, 1))
        self.assertEqual(playlist.next_after((7, 1)), (8, 0))
        self.assertEqual(playlist.next_after((8, 0)), (8, 1))

"""OBS Studio and VLC against ``twistd -n rtmpd``: the broadcaster and the player most people use.

- OBS Studio publishes, headless: under Xvfb with Mesa software GL, from a
  fresh config directory holding a profile with a Custom stream service
  (``rtmp://127.0.0.1:PORT/live`` and a key) and a scene with a colour
  source. ffmpeg then decodes the video the server relays from it.
- VLC plays an ffmpeg-published stream. Its ``scene`` video filter writes
  decoded pictures as PNG files: they are the proof that VLC received and
  decoded the media. VLC refuses to run as root, so as root it runs as
  ``nobody`` through ``setpriv``.

A missing tool skips these tests, and fails them in CI (``tests.support.require``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import tempfile
import time

from tests.support import ffprobe_streams, require
from tests.test_relay_real import PlayerProcess, RealClientTestCase, video_size

OBS_SIZE = (640, 360)
OBS_FPS = 30


class Xvfb:
    """A virtual X display on a number Xvfb picks itself (``-displayfd``), ended by PID."""

    def __init__(self, log_path: str, timeout: float = 20.0) -> None:
        read_fd, write_fd = os.pipe()
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    require("Xvfb"),
                    "-displayfd",
                    str(write_fd),
                    "-screen",
                    "0",
                    "1280x720x24",
                    "-nolisten",
                    "tcp",
                ],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        os.close(write_fd)
        try:
            number = b""
            deadline = time.monotonic() + timeout
            while not number.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                ready, _, _ = select.select([read_fd], [], [], max(remaining, 0))
                chunk = os.read(read_fd, 16) if ready else b""
                if not chunk:
                    self.stop()
                    with open(log_path, "rb") as f:
                        raise AssertionError(f"Xvfb gave no display number: {f.read()[-2000:]!r}")
                number += chunk
        finally:
            os.close(read_fd)
        self.display = f":{int(number)}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def write_obs_config(config_home: str, server: str, key: str) -> None:
    """An OBS config directory: one profile streaming to ``server``/``key``, one scene with a colour source.

    Modal dialogs nobody would answer are turned off: ``FirstRun`` (the
    auto-configuration wizard), ``ConfirmOnExit`` (SIGINT closes the window,
    and closing while streaming would ask first) and the stream start/stop
    warnings.
    """
    root = os.path.join(config_home, "obs-studio")
    profile = os.path.join(root, "basic", "profiles", "rtmpd")
    scenes = os.path.join(root, "basic", "scenes")
    os.makedirs(profile)
    os.makedirs(scenes)
    with open(os.path.join(root, "global.ini"), "w") as f:
        f.write(
            "[General]\nFirstRun=true\nConfirmOnExit=false\nEnableAutoUpdates=false\n"
            "Pre19Defaults=false\nPre21Defaults=false\nPre23Defaults=false\nPre24.1Defaults=false\n\n"
            "[BasicWindow]\nWarnBeforeStartingStream=false\nWarnBeforeStoppingStream=false\n\n"
            "[Basic]\nProfile=rtmpd\nProfileDir=rtmpd\nSceneCollection=rtmpd\nSceneCollectionFile=rtmpd\n"
        )
    width, height = OBS_SIZE
    with open(os.path.join(profile, "basic.ini"), "w") as f:
        f.write(
            "[General]\nName=rtmpd\n\n"
            f"[Video]\nBaseCX={width}\nBaseCY={height}\nOutputCX={width}\nOutputCY={height}\n"
            f"FPSType=0\nFPSCommon={OBS_FPS}\n\n"
            "[Audio]\nSampleRate=48000\nChannelSetup=Stereo\n\n"
            "[Output]\nMode=Simple\n\n"
            "[SimpleOutput]\nStreamEncoder=x264\nPreset=ultrafast\nVBitrate=800\nABitrate=128\n"
        )
    with open(os.path.join(profile, "service.json"), "w") as f:
        json.dump({"type": "rtmp_custom", "settings": {"server": server, "key": key, "use_auth": False}}, f)
    color_uuid = "6f1d3b52-0000-4000-8000-000000000001"
    item = {
        "name": "Color",
        "source_uuid": color_uuid,
        "id": 1,
        "visible": True,
        "locked": False,
        "rot": 0.0,
        "pos": {"x": 0.0, "y": 0.0},
        "scale": {"x": 1.0, "y": 1.0},
        "align": 5,
        "bounds_type": 0,
        "bounds_align": 0,
        "bounds": {"x": 0.0, "y": 0.0},
    }
    collection = {
        "name": "rtmpd",
        "current_scene": "Scene",
        "current_program_scene": "Scene",
        "scene_order": [{"name": "Scene"}],
        "sources": [
            {
                "id": "color_source",
                "versioned_id": "color_source_v3",
                "name": "Color",
                "uuid": color_uuid,
                # ABGR: an opaque orange.
                "settings": {"color": 0xFF2080E0, "width": width, "height": height},
            },
            {
                "id": "scene",
                "versioned_id": "scene",
                "name": "Scene",
                "uuid": "6f1d3b52-0000-4000-8000-000000000002",
                "settings": {"id_counter": 1, "custom_size": False, "items": [item]},
            },
        ],
        "transitions": [],
        "current_transition": "Fade",
        "transition_duration": 300,
    }
    with open(os.path.join(scenes, "rtmpd.json"), "w") as f:
        json.dump(collection, f)


class ObsPublisher(PlayerProcess):
    """OBS Studio streaming its one scene to ``server``/``key`` as soon as it starts; SIGINT ends it."""

    name = "OBS Studio"

    def __init__(self, server: str, key: str, workdir: str, display: str) -> None:
        home = os.path.join(workdir, "home")
        self.config_home = os.path.join(home, ".config")
        write_obs_config(self.config_home, server, key)
        self.output_path = os.path.join(workdir, "obs.out")
        env = dict(
            os.environ,
            DISPLAY=display,
            HOME=home,
            XDG_CONFIG_HOME=self.config_home,
            LIBGL_ALWAYS_SOFTWARE="1",
            QT_QPA_PLATFORM="xcb",
        )
        cmd = [require("obs"), "--startstreaming", "--minimize-to-tray", "--multi", "--disable-updater"]
        with open(self.output_path, "wb") as output:
            self.process = subprocess.Popen(
                cmd, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        self._threads = []

    def output(self) -> str:
        with open(self.output_path, errors="replace") as f:
            return f.read()

    def interrupt(self, timeout: float = 30.0) -> int:
        """SIGINT, as Ctrl-C would: OBS closes its window, stops streaming and exits. Its exit status.

        OBS installs its own SIGINT handler, so this works even where the
        test runs with SIGINT ignored (a background job of a shell).
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.finish(timeout)


class VlcPlayer(PlayerProcess):
    """``cvlc`` playing a URL for ``seconds``, writing every ``ratio``-th decoded picture as a PNG file.

    Audio is decoded to VLC's dummy output and pictures to its dummy video
    output, after the ``scene`` filter saved them. As root it runs as
    ``nobody`` (VLC refuses root), in a directory made writable for it.
    """

    name = "VLC"

    def __init__(self, url: str, seconds: float, ratio: int = 10) -> None:
        self.workdir = tempfile.mkdtemp(prefix="rtmpd-vlc-")
        os.chmod(self.workdir, 0o777)
        self.frames_dir = os.path.join(self.workdir, "frames")
        os.mkdir(self.frames_dir)
        os.chmod(self.frames_dir, 0o777)
        self.log_path = os.path.join(self.workdir, "vlc.log")
        cmd = [
            require("cvlc"),
            "-vv",
            "--intf=dummy",
            "--vout=dummy",
            "--aout=dummy",
            "--no-video-title-show",
            "--video-filter=scene",
            "--scene-format=png",
            f"--scene-ratio={ratio}",
            f"--scene-path={self.frames_dir}",
            "--scene-prefix=frame",
            f"--run-time={seconds}",
            "--play-and-exit",
            url,
        ]
        if os.getuid() == 0:
            nobody = pwd.getpwnam("nobody")
            cmd = [
                require("setpriv"),
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                *cmd,
            ]
        env = dict(os.environ, HOME=self.workdir, XDG_CONFIG_HOME=self.workdir, XDG_CACHE_HOME=self.workdir)
        env.pop("DISPLAY", None)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                cmd, env=env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._threads = []

    def frames(self) -> list[str]:
        return sorted(glob.glob(os.path.join(self.frames_dir, "frame*.png")))

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def rgb_at(image: str, x: int, y: int) -> bytes:
    """The red, green and blue bytes of one pixel of an image file, read by ffmpeg."""
    cmd = [require("ffmpeg"), "-v", "error", "-i", image, "-vf", f"crop=1:1:{x}:{y}", "-f", "rawvideo"]
    result = subprocess.run([*cmd, "-pix_fmt", "rgb24", "-"], capture_output=True, timeout=20, check=True)
    return result.stdout


class ObsTests(RealClientTestCase):
    def test_obs_publishes_and_ffmpeg_decodes_it(self) -> None:
        display = Xvfb(os.path.join(self.tmp, "xvfb.log"))
        self.addCleanup(display.stop)
        obs = ObsPublisher(f"rtmp://127.0.0.1:{self.server.port}/live", "obs", self.tmp, display.display)
        self.addCleanup(obs.kill)
        try:
            connect = self.server.wait_for_msg("connect command", timeout=60, app="live")
            self.wait_live("obs", timeout=30)
        except AssertionError as e:
            raise AssertionError(f"{e}\nOBS output tail:\n{obs.output()[-3000:]}") from None
        # librtmp's Flash version string: this is OBS's own RTMP output talking.
        self.assertEqual(connect["flashVer"], "FMLE/3.0 (compatible; FMSc/1.0)")
        metadata = self.server.wait_for_msg("Metadata received", stream_key="live/obs")
        self.assertIn("width", metadata["fields"])

        player = self.ffmpeg_player("obs")
        player.wait_frames(2 * OBS_FPS, timeout=30)
        self.assertEqual(video_size(player), OBS_SIZE)

        published = self.server.messages("publish command")[0]
        start = len(self.server.events)
        self.assertEqual(obs.interrupt(), 0, obs.output()[-3000:])
        self.server.wait_for_msg("Connection closed", timeout=20, start=start, conn_id=published["conn_id"])
        # OBS shut down in order: it stopped its stream output itself, it was not killed.
        self.assertIn("[rtmp stream: 'simple_stream'] User stopped the stream", obs.output())
        # The stream ended with the publisher: the player sees its end and exits.
        player.finish(30)
        self.assertGreaterEqual(player.decoded().get("video", 0), 2 * OBS_FPS, player.stderr[-10:])


class VlcTests(RealClientTestCase):
    def test_vlc_plays_and_decodes_an_ffmpeg_publisher(self) -> None:
        self.publish("vlc", 15)
        self.wait_live("vlc")
        start = len(self.server.events)
        vlc = VlcPlayer(self.server.url("vlc"), seconds=6)
        self.addCleanup(vlc.remove)
        status = vlc.finish(timeout=40)
        log = vlc.log()
        self.assertEqual(status, 0, log[-3000:])
        self.server.wait_for_msg("Subscriber added", start=start, stream_key="live/vlc")
        self.assertIn('using video decoder module "avcodec"', log)

        frames = vlc.frames()
        # 6 s at 30 fps (tests.support.ffmpeg_publish) is 180 pictures, one in 10 saved; the first second
        # or so may go to buffering.
        self.assertGreaterEqual(len(frames), 6, log[-3000:])
        middle = frames[len(frames) // 2]
        (picture,) = ffprobe_streams(middle)
        # VLC saves its whole picture buffer: 640 wide, and a few padding rows below the 360 of the video.
        self.assertEqual((picture["codec_name"], picture["width"]), ("png", 640))
        self.assertGreaterEqual(picture["height"], 360)
        # testsrc's yellow bar runs from x=320 to 400 at 640 wide: the picture is the published video.
        self.assertEqual(len(pixel := rgb_at(middle, 360, 20)), 3)
        self.assertTrue(pixel[0] > 200 and pixel[1] > 200 and pixel[2] < 60, f"not yellow: {tuple(pixel)}")
        # testsrc moves from picture to picture: the saved pictures are successive decoded frames, not
        # one picture written again and again.
        digests = {hashlib.sha256(open(path, "rb").read()).hexdigest() for path in frames}
        self.assertGreaterEqual(len(digests), len(frames) - 1)


class ObsKeyFileTests(RealClientTestCase):
    """OBS with the stream key from ``--auth-keys`` is let in; with any other key it is refused."""

    def setUp(self) -> None:
        keys_dir = tempfile.mkdtemp(prefix="rtmpd-keys-")
        self.addCleanup(shutil.rmtree, keys_dir, True)
        keys = os.path.join(keys_dir, "keys.txt")
        with open(keys, "w") as f:
            f.write("live obs-key-7c1e\n")
        self.server_args = ("--auth-keys", keys)
        super().setUp()

    def obs(self, key: str) -> ObsPublisher:
        display = Xvfb(os.path.join(self.tmp, f"xvfb-{key}.log"))
        self.addCleanup(display.stop)
        workdir = os.path.join(self.tmp, key)
        os.mkdir(workdir)
        obs = ObsPublisher(f"rtmp://127.0.0.1:{self.server.port}/live", key, workdir, display.display)
        self.addCleanup(obs.kill)
        return obs

    def test_key_from_the_key_file_accepted_wrong_key_refused(self) -> None:
        wrong = self.obs("not-a-key")
        try:
            decision = self.server.wait_for_msg("Access decision", timeout=60, action="publish")
        except AssertionError as e:
            raise AssertionError(f"{e}\nOBS output tail:\n{wrong.output()[-3000:]}") from None
        self.assertNotEqual(decision["outcome"], "allow")
        refused = self.server.wait_for_msg("Command refused", timeout=20, command="publish")
        self.assertEqual(refused["code"], "NetStream.Publish.BadName")
        self.assertEqual(self.server.messages("Codecs detected"), [])
        wrong.kill()

        start = len(self.server.events)
        good = self.obs("obs-key-7c1e")
        try:
            self.server.wait_for_msg(
                "Access decision", timeout=60, start=start, action="publish", outcome="allow"
            )
            self.wait_live("obs-key-7c1e", timeout=30, start=start)
        except AssertionError as e:
            raise AssertionError(f"{e}\nOBS output tail:\n{good.output()[-3000:]}") from None
        player = self.ffmpeg_player("obs-key-7c1e")
        player.wait_frames(OBS_FPS, timeout=30)
        self.assertEqual(good.interrupt(), 0, good.output()[-3000:])

"""Numbers an operator types (ports, sizes, seconds) are ASCII digits, or a one-line usage error.

``str.isdigit()`` also says yes to superscripts (``"²"``: ``int()`` raises) and
to the digits of other scripts (``"٣"``: ``int()`` gives 3), so a check made
with it either let a traceback through or accepted a port nobody meant.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from rtmpd.admin.door import loopback_default, manhole_endpoint
from rtmpd.core.text import ascii_digits, bounded_number
from rtmpd.remote.options import _listening_ports
from rtmpd.tap import Options
from rtmpd.tap.cluster import listener_address

#: Superscript two (int() raises), Arabic-Indic three and Devanagari seven (int() accepts both).
NOT_ASCII = ("\u00b2", "\u0663", "\u096d", "1\u0663", "\u0661\u0669\u0663\u0665")


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class AsciiDigitsTests(SynchronousTestCase):
    def test_only_ascii_digits(self) -> None:
        for text in ("0", "1935", "0001"):
            self.assertTrue(ascii_digits(text), text)
        for text in ("", " 1", "1 ", "+1", "-1", "1_000", "1.5", "0x10", *NOT_ASCII):
            self.assertFalse(ascii_digits(text), text)


class OptionTests(SynchronousTestCase):
    def assertUsageError(self, *args: str) -> None:
        with self.assertRaises(SystemExit) as raised:
            parse(*args)
        message = str(raised.exception.code)
        self.assertTrue(message.startswith("rtmpd: error: "), message)
        self.assertNotIn("\n", message)

    def test_ports_in_other_digits_are_usage_errors(self) -> None:
        for digits in NOT_ASCII:
            for option in ("--port", "--listen", "--http", "--manhole"):
                for value in (digits, f"tcp:{digits}", f"tcp6:{digits}", f"tcp:port={digits}"):
                    with self.subTest(option=option, value=value):
                        self.assertUsageError(option, value)

    def test_other_numbers_of_an_endpoint_too(self) -> None:
        self.assertUsageError("--port", "tcp:1935:backlog=\u0665\u0660")
        self.assertEqual(parse("--port", "tcp:1935:backlog=50")["port"], "tcp:1935:backlog=50")

    def test_ascii_ports_still_work(self) -> None:
        options = parse("--port", "1935", "--listen", "tcp:port=1936", "--http", "tcp6:8080")
        self.assertEqual(options["port"], "tcp:1935")
        self.assertEqual(options["listen"], ["tcp:port=1936"])
        self.assertEqual(options["http"], "tcp6:8080")

    def test_sizes_and_seconds_in_other_digits_are_usage_errors(self) -> None:
        for digits in NOT_ASCII:
            for option in ("--chunk-size", "--max-queue-bytes", "--publisher-timeout", "--hls-window"):
                with self.subTest(option=option, value=digits):
                    self.assertUsageError(option, digits)
        self.assertUsageError("--publisher-timeout", "\u0661.\u0665")
        self.assertEqual(parse("--chunk-size", "4096").config().chunk_size, 4096)
        self.assertEqual(parse("--publisher-timeout", "1.5").config().publisher_timeout, 1.5)


class EveryNumericOptionTests(SynchronousTestCase):
    """Every option that takes a number, whichever module declares it, refuses other scripts' digits."""

    def test_other_digits_are_refused_wherever_ascii_digits_are_taken(self) -> None:
        checked = []
        for name, _short, _default, _doc, *rest in Options.optParameters:
            coerce = rest[0] if rest else None
            if coerce is None:
                continue
            for ascii_text, other in (("7", "\u0667"), ("1.5", "\u0661.\u0665"), ("30", "\u0663\u0660")):
                try:
                    coerce(ascii_text)
                except ValueError:
                    continue  # not this kind of number
                with self.subTest(option=name, value=other):
                    self.assertRaises(ValueError, coerce, other)
                checked.append(name)
        # Sizes, seconds, counts, ports and the worker count are all among them.
        for name in (
            "port",
            "chunk-size",
            "max-connections",
            "manhole-login-grace",
            "workers",
            "cluster-ttl",
            "push-grace",
            "record-max-active",
            "media-rate",
        ):
            self.assertIn(name, checked)

    def test_a_positive_number_is_finite(self) -> None:
        for option in ("--publisher-timeout", "--hls-segment-duration", "--rate-window"):
            for value in ("nan", "inf"):
                with self.subTest(option=option, value=value), self.assertRaises(SystemExit) as raised:
                    parse(option, value)
                self.assertTrue(str(raised.exception.code).startswith("rtmpd: error: "))


class EndpointReadersTests(SynchronousTestCase):
    """The readers of an endpoint description take other digits for no port, and never raise."""

    def test_loopback_default_takes_only_ascii_for_a_bare_port(self) -> None:
        for digits in NOT_ASCII:
            self.assertEqual(loopback_default(digits), digits)
            self.assertEqual(manhole_endpoint(digits), digits)
        self.assertEqual(loopback_default("2222"), "tcp:2222:interface=127.0.0.1")

    def test_listening_ports_skip_other_digits(self) -> None:
        for digits in NOT_ASCII:
            options = {"port": f"tcp:{digits}", "listen": [f"tcp6:{digits}", "tcp:1936"]}
            self.assertEqual(_listening_ports(options), {1936})

    def test_listener_address_skips_other_digits(self) -> None:
        for digits in NOT_ASCII:
            self.assertEqual(listener_address(f"tcp:{digits}:interface=127.0.0.1"), (None, None))
        self.assertEqual(listener_address("tcp:1935:interface=127.0.0.1"), ("127.0.0.1", 1935))


class BoundedNumberTests(SynchronousTestCase):
    """``core.text.bounded_number``: the one finite-number option coercer behind the feature options."""

    def test_bounds_and_refusals(self) -> None:
        at_least_zero = bounded_number(float, 0, "a number of seconds >= 0")
        above_zero = bounded_number(float, 0, "a number of seconds > 0", above=True)
        self.assertEqual(at_least_zero("0"), 0.0)
        self.assertEqual(above_zero("0.5"), 0.5)
        for coerce, bad in [(above_zero, "0"), (at_least_zero, "-1"), (at_least_zero, "nan"),
                            (at_least_zero, "inf"), (at_least_zero, "٣"), (at_least_zero, "x")]:
            with self.assertRaises(ValueError):
                coerce(bad)
        self.assertEqual(at_least_zero.coerceDoc, "A number of seconds >= 0.")

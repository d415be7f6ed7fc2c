"""gala_probe.py's control channel against the control-line vectors
(probe-sdk/probe-decl/vectors/control_lines.json).

Standard library only. Run by probe-sdk/tests/script_helpers.rs, or by hand:
    python3 -m unittest discover -s probe-sdk/tests/python -v
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SDK, "scripts"))

import gala_probe  # noqa: E402  (found through the path set just above)

with open(os.path.join(SDK, "probe-decl", "vectors", "control_lines.json"), encoding="utf-8") as f:
    VECTORS = json.load(f)

MAX = VECTORS["max_line_bytes"]


def long_line(v):
    """The line of a `long` vector, newline included, as bytes."""
    fixed = len(v["prefix"]) + len(v["suffix"]) + 1
    line = (v["prefix"] + v["fill"] * (v["bytes"] - fixed) + v["suffix"] + "\n").encode()
    assert len(line) == v["bytes"]
    return line


def chunk_bytes(chunk):
    if isinstance(chunk, dict):
        return (chunk["fill"] * chunk["count"]).encode()
    return chunk.encode()


def quiet(fn, *args):
    """Runs fn, returning (result, stderr text)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        result = fn(*args)
    return result, err.getvalue()


class Lines(unittest.TestCase):
    def test_limit_is_the_contracts(self):
        self.assertEqual(gala_probe.MAX_CONTROL_LINE_BYTES, MAX)

    def test_valid_lines_mean_what_the_vectors_say(self):
        self.assertGreaterEqual(len(VECTORS["valid"]), 20)
        for v in VECTORS["valid"]:
            for line in (v["line"], v["line"] + "\n", (v["line"] + "\n").encode()):
                with self.subTest(note=v["note"], line=line):
                    msg = gala_probe.parse_control_line(line)
                    self.assertEqual(msg["v"], v["v"])
                    self.assertEqual(msg["probe"], v["probe"])
                    self.assertEqual(msg["probe_bits"], v["probe_bits"])
                    if "params" in v:
                        self.assertEqual(msg["params"], v["params"])
                    self.assertEqual(msg["snoop"]["mode"], v["mode"])
                    self.assertEqual(msg["snoop"]["pids"], v["pids"])
                    self.assertEqual(gala_probe.control_period(msg, None), v["period"])
                    self.assertTrue(v["selects"])
                    for pid, observed in v["selects"]:
                        self.assertIs(gala_probe.control_selects(msg, pid), observed, pid)

    def test_invalid_lines_are_refused(self):
        self.assertGreaterEqual(len(VECTORS["invalid"]), 30)
        for v in VECTORS["invalid"]:
            line = v["line"] if "line" in v else bytes.fromhex(v["bytes_hex"])
            with self.subTest(note=v["note"], line=line):
                with self.assertRaises(gala_probe.ControlLineError) as caught:
                    gala_probe.parse_control_line(line)
                self.assertEqual(caught.exception.reason, v["reject"])

    def test_long_lines_stop_at_the_limit(self):
        for v in VECTORS["long"]:
            with self.subTest(note=v["note"]):
                line = long_line(v)
                if "reject" in v:
                    with self.assertRaises(gala_probe.ControlLineError) as caught:
                        gala_probe.parse_control_line(line)
                    self.assertEqual(caught.exception.reason, v["reject"])
                else:
                    msg = gala_probe.parse_control_line(line)
                    self.assertEqual(msg["probe_bits"], v["probe_bits"])
                    self.assertEqual(gala_probe.control_period(msg, None), v["period"])

    def test_no_message_observes_everything(self):
        self.assertTrue(gala_probe.control_selects(None, 1))
        self.assertEqual(gala_probe.control_period(None, 5), 5)


def read_all(control, deadline=20.0):
    """Polls until end of input; returns the newest message poll() returned."""
    newest = None
    end = time.monotonic() + deadline
    while not control.closed:
        if time.monotonic() > end:
            raise AssertionError("the reader did not reach end of input")
        msg = control.poll(0.05)
        if msg is not None:
            newest = msg
    msg = control.poll()
    return msg if msg is not None else newest


class Streams(unittest.TestCase):
    def check(self, v, control, newest, err):
        if v["newest"] is None:
            self.assertIsNone(newest)
            self.assertIsNone(control.message)
        else:
            self.assertEqual(newest["probe_bits"], v["newest"]["probe_bits"])
            self.assertEqual(control.probe_bits, v["newest"]["probe_bits"])
            self.assertEqual(control.period(None), v["newest"]["period"])
        self.assertEqual((control.received, control.refused), (v["received"], v["refused"]))
        warnings = err.splitlines()
        self.assertEqual(len(warnings), 1 if v["refused"] else 0, err)
        if warnings:
            self.assertTrue(warnings[0].startswith("[WARN] control channel: line skipped: "))

    def test_streams_through_a_pipe(self):
        """Pieces written one by one with pauses, so lines also arrive in pieces."""
        for v in VECTORS["streams"]:
            with self.subTest(note=v["note"]):
                r, w = os.pipe()

                def write(chunks=v["chunks"], w=w):
                    try:
                        for c in chunks:
                            os.write(w, chunk_bytes(c))
                            time.sleep(0.01)
                    finally:
                        os.close(w)

                writer = threading.Thread(target=write)
                writer.start()
                try:
                    control = gala_probe.Control(r)
                    newest, err = quiet(read_all, control)
                finally:
                    writer.join()
                    os.close(r)
                self.check(v, control, newest, err)

    def test_streams_from_a_file(self):
        """All pieces at once (a regular file is always readable)."""
        for v in VECTORS["streams"]:
            with self.subTest(note=v["note"]):
                with tempfile.TemporaryFile() as f:
                    for c in v["chunks"]:
                        f.write(chunk_bytes(c))
                    f.seek(0)
                    control = gala_probe.Control(f.fileno())
                    newest, err = quiet(read_all, control)
                self.check(v, control, newest, err)


class Polling(unittest.TestCase):
    def test_poll_never_blocks_and_keeps_partial_lines(self):
        r, w = os.pipe()
        try:
            control = gala_probe.Control(r)
            start = time.monotonic()
            self.assertIsNone(control.poll())
            self.assertLess(time.monotonic() - start, 0.5)
            os.write(w, b'{"probe_bits":3,"params":{"report_pe')
            self.assertIsNone(control.poll())
            os.write(w, b'riod":9,"dev_name":"sda"},"snoop":{"mode":"exclude","pids":[7]}}\n')
            msg = control.poll()
            self.assertEqual(msg["probe_bits"], 3)
            self.assertIsNone(control.poll(), "a message is returned once")
            self.assertEqual(control.param("dev_name"), "sda")
            self.assertEqual(control.param("nope", "x"), "x")
            self.assertEqual(control.period(5), 9)
            self.assertFalse(control.selects(7))
            self.assertTrue(control.selects(8))
            self.assertFalse(control.closed)
        finally:
            os.close(w)
            os.close(r)

    def test_no_channel_never_yields(self):
        with open(os.devnull, "rb") as null:
            control = gala_probe.Control(null.fileno())
            self.assertIsNone(control.poll())
            self.assertTrue(control.closed)
        self.assertIsNone(control.probe_bits)
        self.assertEqual(control.probe, [])
        self.assertTrue(control.selects(1))
        self.assertEqual(control.param("report_period", 5), 5)
        # A closed descriptor.
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        control = gala_probe.Control(r)
        self.assertIsNone(control.poll())
        self.assertTrue(control.closed)


class Sleeping(unittest.TestCase):
    def test_a_period_change_applies_at_once(self):
        """A 30 s period shortened to 1 s by a control line ends the wait about 1 s after it
        started, not 30 s."""
        r, w = os.pipe()
        try:
            control = gala_probe.Control(r)
            start = time.monotonic()

            def send():
                time.sleep(0.3)
                os.write(w, b'{"params":{"report_period":1}}\n')

            sender = threading.Thread(target=send)
            sender.start()
            self.assertTrue(control.sleep(30))
            sender.join()
            took = time.monotonic() - start
            self.assertGreater(took, 0.9)
            self.assertLess(took, 3.0)
            self.assertEqual(control.period(30), 1)
            # The next boundary is one new period later.
            start = time.monotonic()
            self.assertTrue(control.sleep(30))
            self.assertLess(time.monotonic() - start, 1.5)
        finally:
            os.close(w)
            os.close(r)

    def test_a_change_to_a_period_already_over_ends_the_wait_now(self):
        r, w = os.pipe()
        try:
            control = gala_probe.Control(r)
            os.write(w, b'{"params":{"report_period":1}}\n')
            self.assertTrue(control.sleep(30))
            start = time.monotonic()

            def send():
                time.sleep(0.6)
                os.write(w, b'{"params":{"report_period":60}}\n')
                time.sleep(0.6)
                # 1.2 s after the boundary: a 1 s period is over, so the wait ends now.
                os.write(w, b'{"params":{"report_period":1}}\n')

            sender = threading.Thread(target=send)
            sender.start()
            self.assertTrue(control.sleep(30))
            sender.join()
            took = time.monotonic() - start
            self.assertGreater(took, 1.1)
            self.assertLess(took, 2.5)
        finally:
            os.close(w)
            os.close(r)


if __name__ == "__main__":
    unittest.main()

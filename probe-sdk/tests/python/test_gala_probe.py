"""gala_probe.py against the record-line vectors (probe-sdk/record-line/vectors/record_lines.json).

Standard library only. Run by probe-sdk/tests/script_helpers.rs, or by hand:
    python3 -m unittest discover -s probe-sdk/tests/python -v
"""

import contextlib
import io
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SDK, "scripts"))

import gala_probe  # noqa: E402  (found through the path set just above)

with open(os.path.join(SDK, "record-line", "vectors", "record_lines.json"), encoding="utf-8") as f:
    VECTORS = json.load(f)

LOGGERS = {
    "info": gala_probe.log_info,
    "warn": gala_probe.log_warn,
    "error": gala_probe.log_error,
}


class Values(unittest.TestCase):
    def test_writer_escapes_as_the_vectors_say(self):
        self.assertGreaterEqual(len(VECTORS["values"]), 15)
        for v in VECTORS["values"]:
            with self.subTest(value=v["value"]):
                self.assertEqual(gala_probe.format_field(v["value"]), v["escaped"])

    def test_escaped_values_read_back(self):
        for v in VECTORS["values"]:
            with self.subTest(escaped=v["escaped"]):
                line = "|t|" + v["escaped"] + "|"
                self.assertEqual(gala_probe.split_line(line), ("t", [v["value"]]))


class Lines(unittest.TestCase):
    def test_reader_follows_the_vectors(self):
        self.assertGreaterEqual(len(VECTORS["lines"]), 40)
        for v in VECTORS["lines"]:
            with self.subTest(line=v["line"], note=v["note"]):
                if "reject" in v:
                    with self.assertRaises(gala_probe.RecordLineError) as caught:
                        gala_probe.split_line(v["line"])
                    self.assertEqual(caught.exception.reason, v["reject"])
                else:
                    self.assertEqual(gala_probe.split_line(v["line"]), (v["table"], v["fields"]))

    def test_written_records_read_back(self):
        for v in VECTORS["lines"]:
            if "reject" in v:
                continue
            with self.subTest(line=v["line"]):
                line = gala_probe.format_record(v["table"], *v["fields"])
                self.assertTrue(line.endswith("|\n"))
                self.assertEqual(line.count("\n"), 1)
                self.assertEqual(gala_probe.split_line(line[:-1]), (v["table"], v["fields"]))


class Logs(unittest.TestCase):
    def test_log_lines_as_the_vectors_say(self):
        self.assertTrue(VECTORS["log_writes"])
        for v in VECTORS["log_writes"]:
            with self.subTest(message=v["message"]):
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    LOGGERS[v["level"]](v["message"])
                self.assertEqual(err.getvalue(), v["line"] + "\n")


if __name__ == "__main__":
    unittest.main()

import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipfile

import support


class PackageTest(unittest.TestCase):
    def test_wheel_carries_the_go_publish_script(self):
        """pip builds a wheel from the repository, and its publish.lua and
        fence.lua are the Go broker's, byte for byte."""
        out = tempfile.mkdtemp(prefix="ssehub-wheel-")
        work = tempfile.mkdtemp(prefix="ssehub-src-")
        try:
            # Built from a copy, so the checkout gets no build directory.
            src = os.path.join(work, "python")
            shutil.copytree(os.path.join(support.ROOT, "python"), src, symlinks=False,
                            ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", out, src], check=True)
            (wheel,) = [f for f in os.listdir(out) if f.endswith(".whl")]
            with zipfile.ZipFile(os.path.join(out, wheel)) as z:
                packed = z.read("ssehub/publish.lua")
                names = set(z.namelist())
            for name in ("publish.lua", "fence.lua"):
                with zipfile.ZipFile(os.path.join(out, wheel)) as z:
                    packed = z.read("ssehub/" + name)
                with open(os.path.join(support.ROOT, "broker", "redisbroker", name), "rb") as f:
                    self.assertEqual(packed, f.read(), name)
            for name in ("ssehub/__init__.py", "ssehub/publisher.py", "ssehub/flask.py", "ssehub/token.py"):
                self.assertIn(name, names)
        finally:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()

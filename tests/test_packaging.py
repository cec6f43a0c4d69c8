"""Packaging follows the layout: the wheel that `pip install .` builds holds every module and every shipped file."""

import glob
import os
import subprocess
import sys
import zipfile

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_wheel_holds_every_module_and_yaml_file(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), CHECKOUT], check=True, timeout=300, cwd=tmp_path)
    wheel, = glob.glob(str(tmp_path / "*.whl"))
    packed = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for pattern in ("recbole_diffusion/**/*.py", "properties/**/*.yaml", "properties/**/*.hyper", "properties/*.py"):
        for path in glob.glob(os.path.join(CHECKOUT, pattern), recursive=True):
            relative = os.path.relpath(path, CHECKOUT).replace(os.sep, "/")
            if relative.startswith("properties/"):
                relative = "recbole_diffusion/" + relative  # properties/ installs as recbole_diffusion.properties
            expected.add(relative)
    assert len(expected) > 60
    assert sorted(expected - packed) == []

"""Build glue: `pip install .` runs `make lib` at the repo root and ships libflash_mla.so inside
the flash_mla package (package data). The library is plain C/CUDA loaded through ctypes, so the
wheel does not depend on the Python ABI or on torch: it is tagged py3-none-<platform>.

Environment:
  FLASH_MLA_SKIP_MAKE=1   do not run make; use an existing ./libflash_mla.so (or FLASH_MLA_LIBRARY)
  MAKE, MAKEFLAGS         as usual (e.g. MAKEFLAGS=-j16)
"""
import os
import re
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = os.path.dirname(os.path.abspath(__file__))
LIB = "libflash_mla.so"


def _version():
    with open(os.path.join(ROOT, "include", "flash_mla.h")) as f:
        text = f.read()
    parts = [re.search(r"#define FLASH_MLA_VERSION_%s (\d+)" % k, text).group(1) for k in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(parts)


def _built_library():
    if os.environ.get("FLASH_MLA_SKIP_MAKE") not in (None, "", "0"):
        path = os.environ.get("FLASH_MLA_LIBRARY") or os.path.join(ROOT, LIB)
    else:
        subprocess.check_call([os.environ.get("MAKE", "make"), "lib"], cwd=ROOT)
        path = os.path.join(ROOT, LIB)
    if not os.path.isfile(path):
        raise RuntimeError("flash_mla: %s was not built (expected at %s)" % (LIB, path))
    return path


class BuildPyWithLib(build_py):
    """build_py that builds libflash_mla.so with make and copies it into the built package."""

    def run(self):
        lib = _built_library()
        super().run()
        dest_dir = os.path.join(self.build_lib, "flash_mla")
        os.makedirs(dest_dir, exist_ok=True)
        shutil.copy2(lib, os.path.join(dest_dir, LIB))


class BinaryDistribution(Distribution):
    """The package carries a native library: platform wheel, never 'any'."""

    def has_ext_modules(self):
        return True


cmdclass = {"build_py": BuildPyWithLib}

try:  # setuptools >= 70.1 carries bdist_wheel; older ones take it from the wheel package
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # pragma: no cover
    try:
        from wheel.bdist_wheel import bdist_wheel as _bdist_wheel
    except ImportError:
        _bdist_wheel = None

if _bdist_wheel is not None:

    class BdistWheelPy3(_bdist_wheel):
        """ctypes library, no CPython extension: any Python 3, this platform."""

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = BdistWheelPy3

setup(version=_version(), cmdclass=cmdclass, distclass=BinaryDistribution)

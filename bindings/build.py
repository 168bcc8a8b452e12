"""`lmpc build-capi -o DIR`: compile liblmpc.so (cffi embedding mode) and put lmpc.h beside it.

The library embeds the Python that builds it: it links to that Python's libpython (found at run time
through an rpath), and records that Python's home and the site-packages holding lmpc_runtime as the
defaults of `lmpc_boot(NULL, NULL)`. A game that ships its own Python passes its paths to lmpc_boot.
"""

from __future__ import annotations

import re
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from lmpc_runtime.errors import LmpcError

HERE = Path(__file__).resolve().parent
HEADER = HERE / "lmpc.h"
C_SOURCE = HERE / "lmpc_capi.c"


def python_api() -> str:
    """What Python implements, declared for cffi (kept out of the public header): the `_lmpc_py_*`
    prototypes at the top of lmpc_capi.c, which is where the C side declares them too."""
    return "\n".join(re.findall(r"^int _lmpc_py_\w+\([^;]*\);", C_SOURCE.read_text(), re.M))


# Types and the C helpers the Python side calls.
C_API = """
typedef struct lmpc_npc lmpc_npc;
typedef struct lmpc_event {
    int kind; int finish; int reply_id; int tokens; lmpc_npc *npc; size_t text_len;
} lmpc_event;
static void lmpc_set_error(const char *message);
static const char *lmpc_boot_site(void);
"""

# Runs inside the embedded interpreter the first time the library calls into Python.
# If LMPC cannot be imported, the boot entry point reports why (lmpc_errmsg) instead of cffi printing.
START_UP = """
import sys
sys.argv = sys.argv or ["liblmpc"]
from _lmpc_capi import ffi, lib
try:
    import site
    site.addsitedir(ffi.string(lib.lmpc_boot_site()).decode("utf-8"))  # its .pth files too
    from lmpc_runtime import capi
    capi.bind(ffi, lib)
except BaseException as exc:
    _why = ("cannot import LMPC: %s: %s" % (type(exc).__name__, exc)).encode("utf-8", "replace")[:2000]

    @ffi.def_extern(name="_lmpc_py_boot")
    def _boot_failed():
        lib.lmpc_set_error(_why)
        return 0
"""


def _c_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_capi(out_dir: Path) -> Path:
    """Compile liblmpc.so into `out_dir` (with lmpc.h beside it); returns the library's path."""
    try:
        import cffi
        import setuptools  # noqa: F401  (cffi compiles through it)
    except ImportError as exc:
        raise LmpcError(f"building the C library needs cffi and setuptools: {exc}") from exc
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise LmpcError("this Python has no shared libpython, which an embedding library must link to")
    libdir = sysconfig.get_config_var("LIBDIR")
    site_packages = sysconfig.get_paths()["purelib"]  # of a virtual environment, if the build runs in one
    python_dir = f"python{sys.version_info.major}.{sys.version_info.minor}"

    ffi = cffi.FFI()
    ffi.cdef(C_API)
    ffi.embedding_api(python_api())
    ffi.set_source(
        "_lmpc_capi",
        C_SOURCE.read_text(),
        include_dirs=[str(HERE)],
        define_macros=[
            ("LMPC_DEFAULT_PYTHON_HOME", _c_string(sys.base_prefix)),
            ("LMPC_DEFAULT_SITE_PACKAGES", _c_string(site_packages)),
            ("LMPC_PYTHON_DIR", _c_string(python_dir)),
        ],
        extra_compile_args=["-O2", "-Wall"],
        extra_link_args=[f"-Wl,-rpath,{libdir}", "-pthread"],
    )
    ffi.embedding_init_code(START_UP)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(ffi.compile(tmpdir=tmp, target="liblmpc.so", verbose=False))
        library = out_dir / "liblmpc.so"
        shutil.copyfile(built, library)
    shutil.copyfile(HEADER, out_dir / "lmpc.h")
    return library

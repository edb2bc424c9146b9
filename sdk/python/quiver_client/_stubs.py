"""Locates and imports the Python stubs that CMake generates from proto/ (never committed).

The build writes them to ``<build>/python``: the ``quiver.v1`` package (``*_pb2`` messages and
``*_pb2_grpc`` service stubs) and ``grpc/health/v1`` (the standard health service). Search
order: the ``stubs_dir`` argument, the ``QUIVER_PY_STUBS`` environment variable, stubs already
imported in this process, ``build/python`` at the repository root (this file lives in
``<repo>/sdk/python/quiver_client``), then plain ``sys.path``.
"""
import importlib
import importlib.util
import os
import sys
import types

ENV_VAR = "QUIVER_PY_STUBS"
_PROBE = os.path.join("quiver", "v1", "points_pb2.py")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
DEFAULT_DIR = os.path.join(_REPO_ROOT, "build", "python")

_loaded = None


def _has_stubs(path):
    return bool(path) and os.path.isfile(os.path.join(path, _PROBE))


def _import_all(directory):
    if directory is not None:
        directory = os.path.abspath(directory)
        if directory not in sys.path:
            sys.path.insert(0, directory)
    ns = types.SimpleNamespace(directory=directory)
    for mod in ("common", "collections", "points", "cluster"):
        setattr(ns, mod, importlib.import_module(f"quiver.v1.{mod}_pb2"))
        setattr(ns, mod + "_grpc", importlib.import_module(f"quiver.v1.{mod}_pb2_grpc"))
    if ns.directory is None:
        ns.directory = os.path.dirname(os.path.dirname(os.path.dirname(ns.points.__file__)))
    ns.health = _load_health(ns.directory)
    return ns


def _load_health(directory):
    """grpc.health.v1.health_pb2: already imported, installed, or the generated file itself."""
    name = "grpc.health.v1.health_pb2"
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    path = os.path.join(directory or "", "grpc", "health", "v1", "health_pb2.py")
    if not os.path.isfile(path):
        return None  # health() then says where it looked
    # Loaded under a private name: the installed 'grpc' package stays untouched.
    spec = importlib.util.spec_from_file_location("quiver_client._health_pb2", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[spec.name] = mod
    return mod


def load(stubs_dir=None):
    """Imports the generated modules once per process and returns them as a namespace.

    Raises ImportError, naming every place searched, when no stubs are found.
    """
    global _loaded
    for label, path in (("stubs_dir argument", stubs_dir), (ENV_VAR, os.environ.get(ENV_VAR))):
        if path is None or path == "":
            continue
        if not _has_stubs(path):
            raise ImportError(
                f"quiver_client: {label} {path!r} holds no generated stubs (missing {_PROBE}); "
                "build them with `ninja -C <build> qv_proto_python` and pass <build>/python")
        if _loaded is None:
            _loaded = _import_all(path)
        # A process holds one copy of the generated modules: later clients share the first.
        return _loaded
    if _loaded is not None:
        return _loaded
    tried = []
    if "quiver.v1.points_pb2" in sys.modules:
        _loaded = _import_all(None)
        return _loaded
    tried.append(DEFAULT_DIR)
    if _has_stubs(DEFAULT_DIR):
        _loaded = _import_all(DEFAULT_DIR)
        return _loaded
    try:
        importlib.import_module("quiver.v1.points_pb2")
    except ImportError:
        tried.append("sys.path")
        raise ImportError(
            "quiver_client: cannot find the generated gRPC stubs (quiver.v1.*_pb2); looked in "
            + ", ".join(tried) + ". Build them (`cmake --build build --target qv_proto_python`) "
            f"and pass Client(stubs_dir='<build>/python') or set {ENV_VAR}=<build>/python"
        ) from None
    _loaded = _import_all(None)
    return _loaded

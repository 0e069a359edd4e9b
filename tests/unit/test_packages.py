"""packages: the adapters load minio's client without its admin client, pika's
SelectConnection without its asyncio and blocking adapters and urllib3 without its HTTP/2
support (and importlib.metadata); anything that asks a package for
a name gets it as it always was; when a package cannot be loaded this way (or is loaded
already) it is imported as usual."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stdout.split()


def test_the_adapters_load_minio_without_its_admin_client() -> None:
    assert run("""
import importlib.metadata, sys
import sidecar.shell.io.storage
import minio
print("minio.minioadmin" in sys.modules, "Crypto" in sys.modules,
      minio.__version__ == importlib.metadata.version("minio"))
""") == ["False", "False", "True"]


def test_asking_the_package_for_a_name_runs_its_init_in_full() -> None:
    assert run("""
import sys
import sidecar.shell.io.storage
from minio import Minio, MinioAdmin, S3Error
import minio.api, minio.error
print(Minio is minio.api.Minio, S3Error is minio.error.S3Error, MinioAdmin.__name__,
      sys.modules["Crypto.Util._raw_api"].backend, hasattr(sys.modules["minio"], "nothing"))
""") == ["True", "True", "MinioAdmin", "ctypes", "False"]


def test_a_minio_loaded_before_is_left_as_it_is() -> None:
    assert run("""
import minio
from sidecar.shell.io import packages
print(packages.defer("minio", ("minio.api",)), "minio.minioadmin" in __import__("sys").modules)
""") == ["False", "True"]


def test_a_package_that_cannot_load_this_way_is_imported_as_usual() -> None:
    assert run("""
import sys
from sidecar.shell.io import packages
for name in [n for n in sys.modules if n.startswith("minio")]:
    del sys.modules[name]
print(packages.defer("minio", ("minio.api", "minio.no_such_module")),
      "minio.minioadmin" in sys.modules, sys.modules["minio"].Minio.__name__)
""") == ["False", "True", "Minio"]


def test_threads_asking_first_at_once_all_get_the_name_and_the_init_runs_once() -> None:
    assert run("""
import sys, threading
import sidecar.shell.io.storage
runs, got = [], []
package = sys.modules["minio"]
spec_loader = package.__spec__.loader
real = spec_loader.exec_module
def counted(module):
    runs.append(1)
    real(module)
spec_loader.exec_module = counted
start = threading.Barrier(8)
def ask():
    start.wait()
    got.append(package.MinioAdmin.__name__)
threads = [threading.Thread(target=ask) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(len(runs), sorted(set(got)), len(got))
""") == ["1", "['MinioAdmin']", "8"]


def test_a_constant_the_init_does_not_set_as_a_literal_means_the_usual_import() -> None:
    assert run("""
import sys
from sidecar.shell.io import packages
for name in [n for n in sys.modules if n.startswith("minio")]:
    del sys.modules[name]
print(packages.defer("minio", ("minio.api",), ("__version__", "__all__")),
      "minio.minioadmin" in sys.modules)
""") == ["False", "True"]


def test_the_adapters_load_pika_without_its_asyncio_and_blocking_adapters() -> None:
    assert run("""
import importlib.metadata, sys
import sidecar.shell.io.amqp
import pika
from pika.adapters.utils.connection_workflow import __version__
print("asyncio" in sys.modules, "pika.adapters.blocking_connection" in sys.modules,
      pika.__version__ == __version__ == importlib.metadata.version("pika"))
""") == ["False", "False", "True"]


def test_asking_pika_for_a_name_runs_its_inits_in_full() -> None:
    assert run("""
import sys
import sidecar.shell.io.amqp
import pika
from pika.adapters.select_connection import SelectConnection
print(pika.BlockingConnection.__name__, pika.SelectConnection is SelectConnection,
      pika.adapters.AsyncioConnection.__name__, "asyncio" in sys.modules)
""") == ["BlockingConnection", "True", "AsyncioConnection", "True"]


def test_a_subpackage_that_cannot_load_this_way_means_the_usual_import_of_its_package(
) -> None:
    assert run("""
import sys
from sidecar.shell.io import packages
for name in [n for n in sys.modules if n.startswith("pika")]:
    del sys.modules[name]
print(packages.defer("pika", (), ("__version__",)),
      packages.defer("pika.adapters", ("pika.adapters.no_such_module",)),
      "pika.adapters.asyncio_connection" in sys.modules,
      sys.modules["pika"].URLParameters.__name__)
""") == ["True", "False", "True", "URLParameters"]


def test_the_adapters_load_urllib3_without_its_http2_support_or_importlib_metadata() -> None:
    assert run("""
import sys
import sidecar.shell.io.storage
import urllib3, urllib3.connection
print("importlib.metadata" in sys.modules, "zipfile" in sys.modules,
      urllib3.http2 is sys.modules["urllib3.http2"],
      urllib3.connection.http2_probe is sys.modules["urllib3.http2.probe"])
""") == ["False", "False", "True", "True"]


def test_asking_urllib3_http2_for_a_name_runs_its_init_in_full() -> None:
    assert run("""
import sys
import sidecar.shell.io.storage
import urllib3.http2
from urllib3.http2 import extract_from_urllib3
print(urllib3.http2.inject_into_urllib3.__name__, extract_from_urllib3.__name__,
      "importlib.metadata" in sys.modules, urllib3.http2.orig_HTTPSConnection)
""") == ["inject_into_urllib3", "extract_from_urllib3", "True", "None"]


def test_a_subpackage_whose_unloaded_package_is_not_imported_is_imported_as_usual(
) -> None:
    assert run("""
import sys
from sidecar.shell.io import packages
for name in [n for n in sys.modules if n.startswith("urllib3")]:
    del sys.modules[name]
print(packages.defer("urllib3.http2", ()),
      "inject_into_urllib3" in vars(sys.modules["urllib3.http2"]),
      sys.modules["urllib3"].http2 is sys.modules["urllib3.http2"])
""") == ["False", "True", "True"]

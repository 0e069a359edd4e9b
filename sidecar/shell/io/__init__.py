"""The shell's adapters: RabbitMQ, S3, the UNIX sockets and the manager."""

from . import cryptobackend, packages

# Before any adapter imports minio or pika: minio's admin client (and pycryptodome with
# it) and pika's asyncio and blocking adapters are loaded only if something asks their
# package for a name, pycryptodome then with its ctypes back end (see both modules); so is
# urllib3's HTTP/2 support, whose package imports importlib.metadata (urllib3.connection
# imports only its ``probe``).
packages.defer("urllib3.http2", ("urllib3",))
# minio.api itself is imported only when minio's client is made (s3client.py)
packages.defer("minio", ("minio.helpers", "minio.error"), ("__title__", "__version__"),
               before_init=cryptobackend.prefer_ctypes)
packages.defer("pika", (), ("__version__",))
packages.defer("pika.adapters", ("pika.connection", "pika.adapters.select_connection"))

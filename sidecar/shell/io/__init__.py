"""The shell's adapters: RabbitMQ, S3, the UNIX sockets and the manager."""

from . import cryptobackend, minio_package

# before any adapter imports minio: its admin client (and pycryptodome with it) is loaded
# only if something asks for it, then with pycryptodome's ctypes back end (see both modules)
minio_package.register(before_init=cryptobackend.prefer_ctypes)

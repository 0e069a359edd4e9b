"""The shell's adapters: RabbitMQ, S3, the UNIX sockets and the manager."""

from . import cryptobackend

# before any adapter imports minio, which loads pycryptodome (see cryptobackend.py)
cryptobackend.prefer_ctypes()

"""Integration-test harness: S3 (moto), an AMQP proxy, a fake manager, RabbitMQ helpers,
and a Pipeline that runs the sidecar and a pyterum transformation as subprocesses."""

from .amqp_proxy import B2C, C2B, AmqpProxy, Frame, is_confirm
from .manager import DROP, FakeManager
from .pipeline import (
    EXAMPLES,
    FAST_SIDECAR_ENV,
    TRANSFORMATIONS,
    Pipeline,
    Proc,
    Transformation,
    random_id,
)
from .rabbit import DEFAULT_URL, ITERUM_FLAGS, Message, Rabbit, queue_counts, require_rabbitmq
from .s3 import MULTIPART, S3Request, S3Server

__all__ = [
    "B2C", "C2B", "DEFAULT_URL", "DROP", "EXAMPLES", "FAST_SIDECAR_ENV", "ITERUM_FLAGS",
    "MULTIPART", "TRANSFORMATIONS", "AmqpProxy", "FakeManager", "Frame", "Message",
    "Pipeline", "Proc", "Rabbit", "S3Request", "S3Server", "Transformation", "is_confirm",
    "queue_counts", "random_id", "require_rabbitmq",
]

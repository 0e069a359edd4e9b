"""The shell's adapters: RabbitMQ, S3, the UNIX sockets and the manager."""

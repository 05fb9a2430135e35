"""Message brokers as intake and event delivery (README "Fed by ERP queues").

The seam for another broker (Kafka, AMQP 1.0 / JMS, IBM MQ) is two things only: a consumer that turns each
broker message into ``formats.parse_intake`` + ``Acceptor.accept`` and acknowledges after it returns, and a
``publish(EventMessage)`` coroutine that returns once the broker has confirmed, handed to ``outbox.EventOutbox``.
``formats`` and ``outbox`` know no broker; ``amqp`` is the RabbitMQ one.
"""

"""Embedded mode's broker (workers/celery/broker_sqla.py): a publish batch is one insert and one commit,
and every message of it arrives whole, in order, through kombu's own consumer side."""

from __future__ import annotations

from pathlib import Path

from kombu import Connection, Exchange, Queue
from sqlalchemy import create_engine, text

from workers.celery import broker_sqla


def test_a_batch_arrives_whole_and_in_order(tmp_path: Path) -> None:
    broker_sqla.use()
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    exchange = Exchange("atrelay-test", type="direct")
    queue = Queue("atrelay-test", exchange, routing_key="atrelay-test")
    with Connection(url) as conn, conn.SimpleQueue(queue) as consumer:
        producer = conn.Producer()
        with producer.batch():
            for n in range(40):
                producer.publish({"n": n}, exchange=exchange, routing_key="atrelay-test", declare=[queue])
            engine = create_engine(f"sqlite:///{tmp_path / 'broker.db'}")
            with engine.connect() as db:  # nothing committed before the batch ends
                assert db.execute(text("SELECT count(*) FROM kombu_message")).scalar_one() == 0
        with engine.connect() as db:
            assert db.execute(text("SELECT count(*) FROM kombu_message WHERE visible = 1 AND version = 1"
                                   )).scalar_one() == 40
        engine.dispose()
        got = []
        for _ in range(40):
            message = consumer.get(timeout=5)
            got.append(message.payload["n"])
            message.ack()
    assert got == list(range(40))

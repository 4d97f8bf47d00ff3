"""The model is handed over in arrival order, and a waiter that gives up leaves the queue."""

import threading

from phi_demo.engine.fairness import FifoLock
from tests.helpers import wait_until


def _queue_up(lock: FifoLock, n: int, served: list[int], cancels: list[threading.Event] | None = None):
    threads = []
    for i in range(n):
        cancel = cancels[i] if cancels else None

        def take(i=i, cancel=cancel):
            if lock.acquire(cancel=cancel):
                served.append(i)
                lock.release()

        t = threading.Thread(target=take)
        t.start()
        threads.append(t)
        assert wait_until(lambda i=i: lock.waiting == i + 1, 5)  # each one queued before the next comes
    return threads


def test_waiters_are_served_in_arrival_order():
    lock = FifoLock()
    served: list[int] = []
    lock.acquire()
    threads = _queue_up(lock, 8, served)
    lock.release()
    for t in threads:
        t.join(5)
    assert served == list(range(8))


def test_a_waiter_that_gives_up_leaves_the_queue():
    lock = FifoLock()
    served: list[int] = []
    cancels = [threading.Event() for _ in range(3)]
    lock.acquire()
    threads = _queue_up(lock, 3, served, cancels)
    cancels[1].set()  # a client disconnects while waiting
    assert wait_until(lambda: lock.waiting == 2, 5)
    lock.release()
    for t in threads:
        t.join(5)
    assert served == [0, 2]
    assert not lock.locked() and lock.waiting == 0


def test_timeout_and_non_blocking_acquire_give_up_without_a_trace():
    lock = FifoLock()
    with lock:
        assert lock.acquire(timeout=0.01) is False
        assert lock.acquire(blocking=False) is False
        assert lock.waiting == 0
    assert lock.acquire(timeout=0.01)
    lock.release()


def test_serve_streams_in_turn_and_skips_a_cancelled_waiter():
    lock = FifoLock()
    assert list(lock.serve(threading.Event(), lambda: iter("ab"))) == ["a", "b"]
    assert not lock.locked()
    gone = threading.Event()
    gone.set()
    with lock:
        assert list(lock.serve(gone, lambda: iter("ab"))) == []

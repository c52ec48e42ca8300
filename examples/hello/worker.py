"""The worker process: pretends to work on a job every 2 seconds."""

import signal
import sys
import time


def stop(*_):
    print("worker shutting down", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)

job = 0
while True:
    job += 1
    print(f"working on job {job}", flush=True)
    time.sleep(2)

"""The clock process: ticks every 5 seconds."""

import time

while True:
    print(f"tick {time.strftime('%H:%M:%S')}", flush=True)
    time.sleep(5)

# The client's live view in the BGP lab and in netns-tests/src/fabric.rs: a new TCP connection to IP:8080 every
# 20 ms, and one line a second: which nodes answered (each node serves its name) and how many attempts were lost
# (refused, reset, or no answer within a second).  Usage: python3 -u probe.py IP
import collections, socket, sys, time

ip = sys.argv[1]
seen, lost, second, start = collections.Counter(), 0, 0, time.monotonic()
while True:
    began = time.monotonic()
    try:
        s = socket.create_connection((ip, 8080), timeout=1)
        seen[s.recv(64).decode().strip() or "?"] += 1
        s.close()
    except OSError:
        lost += 1
    now = time.monotonic()
    if now - start >= second + 1:
        second += 1
        print(f"t={second} " + " ".join(f"{k}={v}" for k, v in sorted(seen.items())) + f" lost={lost}")
        seen, lost = collections.Counter(), 0
    time.sleep(max(0.0, 0.02 - (time.monotonic() - began)))

#!/usr/bin/env python3
"""Resident memory per idle connection: resman and redis-server, same run.

Opens N connections to each server, has each send one request and read its answer (so the
connection is fully set up, as a real client's is), then idles, and reports
(RSS after - RSS before) / N from /proc/PID/status.
With --connect-only the connections send nothing.
Usage: scripts/idle-memory.py [N] [--connect-only]   (needs target/release/resman and redis-server)
"""
import os, resource, socket, subprocess, sys, time

args = [a for a in sys.argv[1:] if not a.startswith("--")]
N = int(args[0]) if args else 5000
SEND = "--connect-only" not in sys.argv
resource.setrlimit(resource.RLIMIT_NOFILE, (N * 3, N * 3))

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")

def measure(name, argv, port, request, answer_end):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (N * 3, N * 3)))
    try:
        wait_port(port)
        warm = socket.create_connection(("127.0.0.1", port))
        warm.sendall(request); warm.recv(4096)
        time.sleep(0.5)
        before = rss_kb(proc.pid)
        conns = []
        for _ in range(N):
            s = socket.create_connection(("127.0.0.1", port))
            if SEND:
                s.sendall(request)
            conns.append(s)
        for s in conns if SEND else []:
            data = b""
            while not data.endswith(answer_end):
                data += s.recv(4096)
        time.sleep(1.0)
        after = rss_kb(proc.pid)
        per = (after - before) * 1024 / N
        print(f"{name:8s} before {before} KiB, after {after} KiB, {per:.0f} bytes per idle connection")
        for s in conns:
            s.close()
        return per
    finally:
        proc.terminate(); proc.wait()

crab = "🦀".encode()
ours = measure("resman", ["target/release/resman", "serve", "--port", "47969"], 47969,
               b'{"type":"ping","queryIndex":1}' + crab, crab)
redis = measure("redis", ["redis-server", "--port", "47379", "--save", "", "--appendonly", "no",
                          "--maxclients", str(N * 2)], 47379, b"PING\r\n", b"\r\n")
print(f"ratio resman/redis: {ours / redis:.2f}")

import asyncio, sys, base64, os, urllib.request
base = sys.argv[1]; n = int(sys.argv[2]); rounds = int(sys.argv[3]); mode = sys.argv[4]
host, port = base.split(':')
def metric(name):
    for line in urllib.request.urlopen(f"http://{base}/metrics").read().decode().splitlines():
        if line.startswith(name + " "): return float(line.split()[1])
async def one(i, room):
    r, w = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    w.write((f"GET /ws/chat/{room}/?username=u{i} HTTP/1.1\r\nHost: {base}\r\nOrigin: http://{base}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await w.drain()
    await r.readuntil(b"\r\n\r\n")
    await r.read(200)  # part of the welcome
    await asyncio.sleep(0.1)
    if mode == "rst":
        import socket, struct
        s = w.get_extra_info('socket'); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    w.close()
async def main():
    for rnd in range(rounds):
        await asyncio.gather(*[one(i, f"room{i%20}") for i in range(n)])
        await asyncio.sleep(1.5)
    print("conns", metric("banter_connections"), "tasks", metric("banter_runtime_alive_tasks"), flush=True)
asyncio.run(main())

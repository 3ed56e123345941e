import asyncio, sys, base64, os
base = sys.argv[1]; n = int(sys.argv[2])
host, port = base.split(':')
async def one(i):
    r, w = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    w.write((f"GET /ws/chat/idle{i%200}/?username=u{i} HTTP/1.1\r\nHost: {base}\r\nOrigin: http://{base}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await w.drain()
    await r.readuntil(b"\r\n\r\n")
    return r, w
async def main():
    conns = []
    for k in range(0, n, 200):
        conns += await asyncio.gather(*[one(i) for i in range(k, min(n, k+200))])
    print("held", len(conns), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())

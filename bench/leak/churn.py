import asyncio, sys, urllib.request, websockets
base = sys.argv[1]; n = int(sys.argv[2]); rounds = int(sys.argv[3])
def metric(name):
    for line in urllib.request.urlopen(f"http://{base}/metrics").read().decode().splitlines():
        if line.startswith(name + " "): return float(line.split()[1])
async def one(i, room):
    async with websockets.connect(f"ws://{base}/ws/chat/{room}/?username=u{i}", origin=f"http://{base}") as ws:
        await ws.recv()
        if i % 10 == 0:
            await ws.send('{"type":"chat_message","message":"hi %d"}' % i)
        await asyncio.sleep(0.2)
async def main():
    print("start tasks", metric("banter_runtime_alive_tasks"))
    for r in range(rounds):
        await asyncio.gather(*[one(i, f"room{i%20}") for i in range(n)])
        await asyncio.sleep(1.5)
        print("round", r, "conns", metric("banter_connections"), "tasks", metric("banter_runtime_alive_tasks"), flush=True)
asyncio.run(main())

"""torchvision side of bench_throughput.py, run in a separate Python that has torch and torchvision.

Speaks JSON lines on stdin/stdout so the parent can interleave its rounds with MindSpore's:
  {"cmd": "build", "key": k, "width": "0_5", "mode": "infer"|"train", "batch": 32, "size": 224}
  {"cmd": "time", "key": k, "iters": n}   -> {"ok": true, "seconds": [per-iteration times]}
  {"cmd": "info"}                          -> versions and thread count
  {"cmd": "quit"}
"""
import json
import sys
import time

import torch
import torchvision


def build(width: str, mode: str, batch: int, size: int):
    net = getattr(torchvision.models, f"shufflenet_v2_x{width}")(weights=None)
    x = torch.randn(batch, 3, size, size)
    if mode == "infer":
        net.eval()

        def step():
            with torch.inference_mode():
                net(x)
        return step
    net.train()
    y = torch.randint(0, 1000, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        loss.item()
    return step


def main() -> None:
    if len(sys.argv) > 1 and int(sys.argv[1]) > 0:
        torch.set_num_threads(int(sys.argv[1]))
    steps = {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["cmd"] == "quit":
                break
            if req["cmd"] == "info":
                out = {"torch": torch.__version__, "torchvision": torchvision.__version__,
                       "threads": torch.get_num_threads()}
            elif req["cmd"] == "build":
                steps[req["key"]] = build(req["width"], req["mode"], req["batch"], req["size"])
                out = {}
            elif req["cmd"] == "time":
                fn, secs = steps[req["key"]], []
                for _ in range(req["iters"]):
                    t = time.perf_counter()
                    fn()
                    secs.append(time.perf_counter() - t)
                out = {"seconds": secs}
            else:
                raise ValueError(f"unknown command {req['cmd']!r}")
            out["ok"] = True
        except Exception as exc:  # reported to the parent, which prints it
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

"""Closed-loop load for scripts/bench-serve's MiniLM part: CLIENTS concurrent callers, each sending
one ModelInfer of one sentence at a time (INT64 input_ids / attention_mask / token_type_ids
[1, L], L from a fixed distribution over 8..64 tokens) and waiting for its answer.

Usage: python minilm_load.py PORT MODEL SECONDS CLIENTS [SERVER_PID]
(FIXED_LENGTH=N makes every sentence N tokens: what padding costs, by difference.)
Prints: sentences_per_second=... tokens_per_second=... mean_length=... errors=... and, given the
server's PID, server_cpu_seconds=... over the measured window.
"""
import asyncio
import os
import sys
import time

import numpy as np

from kserve_tools import stubs


def requests(pb, model, count=512, seed=11):
    rng = np.random.default_rng(seed)
    bodies, lengths = [], []
    for _ in range(count):
        length = int(os.environ["FIXED_LENGTH"]) if "FIXED_LENGTH" in os.environ else int(rng.integers(8, 65))
        ids = np.concatenate([[101], rng.integers(1000, 2000, length - 2), [102]]).astype(np.int64).reshape(1, length)
        request = pb.ModelInferRequest(model_name=model)
        for name, value in [("input_ids", ids), ("attention_mask", np.ones_like(ids)), ("token_type_ids", np.zeros_like(ids))]:
            tensor = request.inputs.add(name=name, datatype="INT64")
            tensor.shape.extend(value.shape)
            request.raw_input_contents.append(value.tobytes())
        bodies.append(request.SerializeToString())
        lengths.append(length)
    return bodies, lengths


def cpu_seconds(pid):
    if pid is None:
        return 0.0
    import os
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(port, model, seconds, clients, pid=None):
    import grpc
    pb, _ = stubs()
    bodies, lengths = requests(pb, model)
    options = [("grpc.max_receive_message_length", -1)]
    done = {"sentences": 0, "tokens": 0, "errors": 0}
    counting = False
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=None, response_deserializer=None)

        async def client(index):
            i = index
            while True:
                body, length = bodies[i % len(bodies)], lengths[i % len(bodies)]
                i += clients
                try:
                    await call(body, timeout=30)
                except grpc.aio.AioRpcError:
                    if counting:
                        done["errors"] += 1
                    continue
                if counting:
                    done["sentences"] += 1
                    done["tokens"] += length

        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        await asyncio.sleep(2)  # warm-up: every plan built, batches forming
        counting = True
        start, cpu_start = time.monotonic(), cpu_seconds(pid)
        await asyncio.sleep(seconds)
        counting = False
        elapsed, cpu = time.monotonic() - start, cpu_seconds(pid) - cpu_start
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(f"sentences_per_second={done['sentences'] / elapsed:.1f} tokens_per_second={done['tokens'] / elapsed:.1f} "
          f"mean_length={np.mean(lengths):.1f} errors={done['errors']} server_cpu_seconds={cpu:.2f}")


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4]),
                    int(sys.argv[5]) if len(sys.argv) > 5 else None))

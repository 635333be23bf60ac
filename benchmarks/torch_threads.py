"""Why tests and `seqspec check` run torch on one thread: a small GRU over 500 steps, timed with
1 and 2 OpenMP threads, each in a fresh process (the count is read when torch starts).

    python benchmarks/torch_threads.py
"""

import os
import subprocess
import sys

CODE = """
import time, torch
g = torch.nn.GRU(4, 16, batch_first=True); x = torch.randn(3, 500, 4)
with torch.inference_mode():
    g(x)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(20):
        g(x)
print(f"threads {torch.get_num_threads()}: {(time.perf_counter() - t) / 20:.4f} s wall, {(time.process_time() - c) / 20:.4f} s CPU per call")
"""

for n in ("1", "2"):
    subprocess.run([sys.executable, "-c", CODE], env={**os.environ, "OMP_NUM_THREADS": n}, check=True)
print(f"load average: {os.getloadavg()}")

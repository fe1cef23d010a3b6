"""A stand-in for a simulation: reads its parameters from the job file given as last argument."""

import configparser
import random
import sys

job = configparser.ConfigParser()
job.read(sys.argv[-1])
seed = int(job["params"]["seed"])
steps = int(job["params"]["steps"])
rng = random.Random(seed)
position = sum(rng.choice((-1, 1)) for _ in range(steps))
print(f"seed={seed} steps={steps} final position={position}")

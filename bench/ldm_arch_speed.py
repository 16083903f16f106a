"""Step time of chapter 12's architecture runs, side by side: the UNet of each `runs/ch12/arch_*` run, built from the
config its training wrote (`unet/config.json`, so exactly the network that was trained), takes `Trainer` steps (batch,
noise, forward, backward, clip, AdamW, EMA: ldm_memory.py's `ldm_step`) on random latents of MNIST's shape (4×8×8),
batch 128. All variants in one process, in turn, the order rotating every round, so that a change of load falls on
all of them. Prints the median wall and CPU seconds per step and each one's ratio to arch_base (wall). The training
runs' own timings were taken while other work shared the cores; this is the clean comparison.

    OMP_NUM_THREADS=2 python bench/ldm_arch_speed.py [--threads 2] [--rounds 5] [--steps 2]   # about 3 min on 2 quiet cores

Not a test: it asserts nothing.
"""
import argparse, json, statistics, sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ldm_memory import REPO, Tee, ldm_step, ldm_trainer, results_path, set_threads, timed  # noqa: E402
from machine import header  # noqa: E402
from sd_book.configs import unet_config_from_diffusers  # noqa: E402


def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('--threads', type=int, default=2)
    a.add_argument('--rounds', type=int, default=5)
    a.add_argument('--steps', type=int, default=2, help='timed steps per variant per round')
    a.add_argument('--batch', type=int, default=128)
    a = a.parse_args()
    set_threads(a.threads); torch.set_flush_denormal(True)  # as Trainer.fit on a CPU
    runs = {p.parent.parent.name: unet_config_from_diffusers(json.loads(p.read_text()))
            for p in sorted((REPO / 'runs' / 'ch12').glob('arch_*/unet/config.json'))}
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(4 * a.batch, 4, 8, 8, generator=g), torch.randint(10, (4 * a.batch,), generator=g)
    trainers = {n: ldm_trainer(a.batch, z, y, unet_cfg=cfg) for n, cfg in runs.items()}
    for tr in trainers.values(): ldm_step(tr, 0)  # warm-up: first-call allocations and kernel choices
    wall, cpu, names = {n: [] for n in runs}, {n: [] for n in runs}, list(runs)
    for r in range(a.rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            for s in range(a.steps):
                w, c = timed(lambda: ldm_step(trainers[n], 1 + r * a.steps + s), 'cpu')
                wall[n].append(w); cpu[n].append(c)
    out, base = Tee(), statistics.median(wall['arch_base'])
    out(f'batch {a.batch}, latents 4x8x8, {a.rounds} rounds x {a.steps} steps per variant; median per step')
    out(f'{"run":28s} {"params":>10s} | {"wall s":>7s} {"CPU s":>7s} | wall / arch_base')
    for n in names:
        params = sum(p.numel() for p in trainers[n].task.unet.parameters())
        out(f'{n:28s} {params:>10,} | {statistics.median(wall[n]):7.3f} {statistics.median(cpu[n]):7.3f} | {statistics.median(wall[n]) / base:.2f}')
    out.write(results_path('ldm_arch_speed', 'cpu', False), [header(f'chapter 12 architecture runs: training step time, {a.threads} thread(s)')])


if __name__ == '__main__':
    main()

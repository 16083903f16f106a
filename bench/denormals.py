"""What flushing denormals buys on a CPU (`torch.set_flush_denormal(True)`, which `Trainer.fit` calls on a CPU).

Float32 numbers below 1.18e-38 are "denormal" (subnormal). Many x86 CPUs compute with them through slow microcode
assists, unless the FTZ/DAZ flags make them zero, which is what `set_flush_denormal(True)` does. In training they appear
late, where tiny gradients are squared into AdamW's second moment (1e-20² = 1e-40). Two pieces of a training step, each
timed on ordinary values and on values in the denormal range, with flushing off and on, in one process, in turn:

- conv: chapter 12's 3×3 convolution (64 channels, 8×8 latents, batch 128), forward and backward, inputs ~N(0, 1)
  against inputs ~N(0, 1)·1e-39;
- adamw: an AdamW step on 2.2 M parameters (the cpu preset UNet's size), gradients ~N(0, 1)·1e-3 against ~N(0, 1)·1e-20.

Prints the median CPU seconds per call over the rounds and the slowdown from denormals with flushing off and on.
Not a test: it asserts nothing.

    OMP_NUM_THREADS=1 python bench/denormals.py [--rounds 7] [--threads 1]
"""
import argparse, statistics, sys, time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ldm_memory import Tee, results_path, set_threads  # noqa: E402
from machine import header  # noqa: E402


def conv_work(scale: float):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x = (torch.randn(128, 64, 8, 8, generator=g) * scale).requires_grad_()
    def f():
        conv.zero_grad(); x.grad = None
        conv(x).sum().backward()
    return f


def adamw_work(scale: float):
    g = torch.Generator().manual_seed(0)
    p = nn.Parameter(torch.randn(2_200_000, generator=g) * 0.02)
    opt = torch.optim.AdamW([p], lr=1e-4)
    p.grad = torch.randn(p.shape, generator=g) * scale
    opt.step()  # the moments now hold what these gradients give them
    return opt.step


def cpu_seconds(fn, calls: int) -> float:
    c = time.process_time()
    for _ in range(calls): fn()
    return (time.process_time() - c) / calls


def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('--rounds', type=int, default=7)
    a.add_argument('--threads', type=int, default=1)
    a = a.parse_args()
    set_threads(a.threads)
    out = Tee()
    works = {'conv': (conv_work, 1.0, 1e-39, 5), 'adamw': (adamw_work, 1e-3, 1e-20, 5)}
    fns = {(w, v): make(s) for w, (make, ordinary, tiny, _) in works.items() for v, s in (('ordinary', ordinary), ('denormal', tiny))}
    times = {(w, v, flush): [] for (w, v) in fns for flush in (False, True)}
    for _ in range(a.rounds):  # every setting once per round, so that a change of load falls on all of them
        for (w, v), fn in fns.items():
            for flush in (False, True):
                torch.set_flush_denormal(flush); fn()  # one warm-up call under this setting
                times[(w, v, flush)].append(cpu_seconds(fn, works[w][3]))
    torch.set_flush_denormal(False)
    out(f'median CPU ms per call over {a.rounds} rounds of {works["conv"][3]} calls; slowdown = denormal / ordinary')
    out(f'{"work":6s} {"flush":5s} | {"ordinary":>9s} {"denormal":>9s} | slowdown')
    for w in works:
        for flush in (False, True):
            o, d = (1e3 * statistics.median(times[(w, v, flush)]) for v in ('ordinary', 'denormal'))
            out(f'{w:6s} {str(flush):5s} | {o:9.2f} {d:9.2f} | {d / o:.2f}x')
    out.write(results_path('denormals', 'cpu', False), [header(f'flush denormals: conv and AdamW on ordinary vs denormal values, {a.threads} thread(s)')])


if __name__ == '__main__':
    main()

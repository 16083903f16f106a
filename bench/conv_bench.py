"""Every convolution of the full SD 1 UNet, timed two ways on the CPU: PyTorch's `F.conv2d` and `conv2d_gemm` (im2col + one matmul).

    python bench/conv_bench.py                       # batch 2, 32x32 latent (the UNet benchmark's size)
    python bench/conv_bench.py --size 64             # batch 2, 64x64 latent (a 512-pixel image with guidance)

A forward of the UNet (random weights) records the input of each convolution; each distinct shape is then timed
with both functions, alternating A B / B A, `--reps` times each, and we print the medians, their ratio, and the total
over the whole forward (each shape times the number of layers that have it) for: always PyTorch, always the matmul,
the rule `sd_book.resnet.Conv2d` uses (matmul at or below `Conv2d.gemm_max_positions` output positions), and the
best of the two per shape. Last, one (2, 1280, 8, 8) 3x3 convolution is run in a child process with ONEDNN_VERBOSE=1,
which makes oneDNN print each primitive it executes with its time: where PyTorch's time goes.
Not a test: it prints numbers, it asserts nothing.
"""
import argparse, os, statistics, subprocess, sys, time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from sd_book.resnet import Conv2d, conv2d_gemm  # noqa: E402
from sd_book.unet import UNet, UNetConfig  # noqa: E402

VERBOSE_CHILD = """
import torch, torch.nn.functional as F
x, w, b = torch.randn(2, 1280, 8, 8), torch.randn(1280, 1280, 3, 3), torch.randn(1280)
with torch.inference_mode():
    F.conv2d(x, w, b, padding=1); print('--- second call ---', flush=True); F.conv2d(x, w, b, padding=1)
"""


def conv_inputs(batch, size):
    "{(input shape, weight shape, stride, padding): [module, input, count]} for one forward of the SD 1 UNet."
    torch.manual_seed(0)
    unet, seen = UNet(UNetConfig.sd_v1()).eval(), {}
    def hook(mod, inp, out):
        key = (tuple(inp[0].shape), tuple(mod.weight.shape), mod.stride, mod.padding)
        seen.setdefault(key, [mod, inp[0].clone(), 0])[2] += 1
    hooks = [m.register_forward_hook(hook) for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        unet(torch.randn(batch, 4, size, size), torch.full((batch,), 500.0), torch.randn(batch, 77, 768))
    for h in hooks: h.remove()
    return seen


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--size', type=int, default=32, help='latent height and width')
    p.add_argument('--reps', type=int, default=7, help='timed calls of each function per shape')
    a = p.parse_args()
    print(f'{time.strftime("%Y-%m-%d %H:%M %Z")} | torch {torch.__version__} | SD 1 UNet convolutions | batch {a.batch}, '
          f'latent {a.size}x{a.size} | float32 CPU | threads {torch.get_num_threads()} of {os.cpu_count()} CPUs | '
          f'load avg {os.getloadavg()[0]:.1f}')
    totals = dict(pytorch=0.0, matmul=0.0, rule=0.0, best=0.0)
    worst = 0.0
    with torch.inference_mode():
        for (xs, ws, stride, padding), (mod, x, count) in conv_inputs(a.batch, a.size).items():
            fs = {'pytorch': lambda: F.conv2d(x, mod.weight, mod.bias, stride, padding),
                  'matmul': lambda: conv2d_gemm(x, mod.weight, mod.bias, stride, padding)}
            y = {k: f() for k, f in fs.items()}  # warm-up
            worst = max(worst, (y['matmul'] - y['pytorch']).abs().max().item())
            times = {k: [] for k in fs}
            for i in range(a.reps):
                for k in (('pytorch', 'matmul') if i % 2 == 0 else ('matmul', 'pytorch')):
                    t0 = time.perf_counter(); fs[k](); times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            n = y['pytorch'].shape[0] * y['pytorch'].shape[2] * y['pytorch'].shape[3]
            use_mm = n <= Conv2d.gemm_max_positions
            totals['pytorch'] += count * med['pytorch']; totals['matmul'] += count * med['matmul']
            totals['rule'] += count * med['matmul' if use_mm else 'pytorch']; totals['best'] += count * min(med.values())
            print(f"shape x {'x'.join(map(str, xs))} w {'x'.join(map(str, ws))} k {ws[-1]} stride {stride[0]} layers {count} "
                  f"N {n} pytorch_ms {med['pytorch']:.1f} matmul_ms {med['matmul']:.1f} ratio {med['matmul'] / med['pytorch']:.2f} "
                  f"rule {'matmul' if use_mm else 'pytorch'}")
    print(f'largest max-abs difference between the two, over all shapes: {worst:.1e}')
    print(f"one forward's convolutions: PyTorch {totals['pytorch']:.0f} ms | always matmul {totals['matmul']:.0f} ms | "
          f"rule (matmul at <= {Conv2d.gemm_max_positions} positions) {totals['rule']:.0f} ms = "
          f"{totals['rule'] / totals['pytorch']:.2f}x PyTorch | best of the two per shape {totals['best']:.0f} ms")
    r = subprocess.run([sys.executable, '-c', VERBOSE_CHILD], capture_output=True, text=True, env={**os.environ, 'ONEDNN_VERBOSE': '1'})
    lines = r.stdout.split('--- second call ---')[-1].splitlines()
    prims = [(l.split(',')[5], l.split(',')[-2], float(l.split(',')[-1])) for l in lines if l.startswith('onednn_verbose,v1,primitive,exec')]
    print('oneDNN primitives of one F.conv2d((2, 1280, 8, 8), 3x3 weight 1280x1280), second call: ' +
          (', '.join(f'{kind} {shape} {ms:.1f} ms' for kind, shape, ms in prims) if prims else 'none reported'))
    print(f'load avg after: {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    main()

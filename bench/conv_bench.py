"""Every convolution of the full SD 1 UNet on the CPU, timed four ways, with oneDNN's own split of PyTorch's time.

    python bench/conv_bench.py                  # batch 2, 32x32 latent (the UNet benchmark's size)
    python bench/conv_bench.py --size 64        # batch 2, 64x64 latent (a 512-pixel image with guidance)

A forward of the UNet (random weights) records the input of each convolution; each distinct shape is then timed,
the four ways in rotating order (A B C D, B C D A, ...), `--reps` times each, and we print the medians:

  pytorch        F.conv2d, what nn.Conv2d runs: oneDNN, which copies the weight into its blocked layout on EVERY call
  matmul         conv2d_gemm: im2col + one matrix product on the plain weight (`use_gemm_convs` below its threshold)
  prepacked      the weight copied into oneDNN's layout ONCE (torch._C._nn.mkldnn_reorder_conv2d_weight), then
                 oneDNN's inference convolution (torch.ops.mkldnn._convolution_pointwise): the kernel that
                 torch.compile's CPU weight-prepacking (freezing) emits, called without compiling anything
  channels_last  F.conv2d with input and weight in channels-last memory format

The cost model of chapter 2: PyTorch's time is alpha*|W| (the weight copy) + beta*|W|*P (the convolution), the
matmul's gamma*|W|*P + im2col, with |W| the weight's size and P = B*H_out*W_out the output positions. A child
process runs each shape with ONEDNN_VERBOSE=1, which makes oneDNN print each primitive it executes with its time:
the weight copy ("reorder" of the weight's shape) and the convolution, separately; between those calls it times the
matmul, so that the three terms are measured under the same load. Per shape we print alpha, beta, gamma (from the
child's medians) and the break-even P* = alpha / (gamma - beta): the matmul is the faster below it. The same child runs the
channels-last call too and reports its weight copy (cl_reorder_ms): channels-last does not avoid it. Last, the total over one
forward (each shape times the number of layers that have it) for each way, for the rule `use_gemm_convs` applies
(matmul for kernels larger than 1x1 at or below `GemmConv2d.max_positions` positions), and for the best of pytorch/matmul per shape.
Not a test: it prints numbers, it asserts nothing.
"""
import argparse, json, os, statistics, subprocess, sys, time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import header  # noqa: E402
from sd_book.resnet import GemmConv2d, _gemm_eligible, conv2d_gemm  # noqa: E402
from sd_book.unet import UNet, UNetConfig  # noqa: E402

WAYS = ('pytorch', 'matmul', 'prepacked', 'channels_last')

VERBOSE_CHILD = """
import json, sys, time, torch, torch.nn.functional as F
sys.path.insert(0, {root!r})
from sd_book.resnet import conv2d_gemm
torch.manual_seed(0)
for xs, ws, stride, padding in json.loads(sys.argv[1]):
    stride, padding = tuple(stride), tuple(padding)
    x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
    xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        F.conv2d(x, w, b, stride, padding); F.conv2d(xc, wc, b, stride, padding); conv2d_gemm(x, w, b, stride, padding)
        for r in range({reps}):  # the matmul timed between oneDNN's calls, so that all three see the same load
            print('@@', json.dumps([xs, ws, stride, padding]), flush=True); F.conv2d(x, w, b, stride, padding)
            t0 = time.perf_counter(); conv2d_gemm(x, w, b, stride, padding)
            print('@@mm', (time.perf_counter() - t0) * 1e3, flush=True)
            print('@@cl', json.dumps([xs, ws, stride, padding]), flush=True); F.conv2d(xc, wc, b, stride, padding)
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


def onednn_split(keys, reps):
    "{(layout, key): (median ms of the weight copy, of the convolution)} and {key: median ms of the matmul}, in a child process."
    arg = json.dumps([[list(xs), list(ws), list(s), list(p)] for xs, ws, s, p in keys])
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
    r = subprocess.run([sys.executable, '-c', VERBOSE_CHILD.replace('{reps}', str(reps)).replace('{root!r}', repr(root)), arg],
                       capture_output=True, text=True, env={**os.environ, 'ONEDNN_VERBOSE': '1'})
    times, mm, cur = {}, {}, None
    for line in r.stdout.splitlines():
        if line.startswith('@@mm '): mm.setdefault(cur[1], []).append(float(line.split()[1]))
        elif line.startswith('@@'):
            layout, spec = line.split(' ', 1)
            xs, ws, s, p = json.loads(spec); cur = (layout == '@@cl', (tuple(xs), tuple(ws), tuple(s), tuple(p)))
            times.setdefault(cur, []).append([0.0, 0.0])
        elif cur and line.startswith('onednn_verbose,v1,primitive,exec'):
            f = line.split(',')
            if f[5] == 'reorder' and f[-2] == 'x'.join(map(str, cur[1][1])): times[cur][-1][0] += float(f[-1])
            elif f[5] == 'convolution': times[cur][-1][1] += float(f[-1])
    return ({k: tuple(statistics.median(v[i] for v in runs) for i in (0, 1)) for k, runs in times.items()},
            {k: statistics.median(v) for k, v in mm.items()})


def ways(mod, x, stride, padding):
    "The four functions, each computing the convolution of `x` with `mod`'s weight."
    w, b = mod.weight, mod.bias
    wp = torch._C._nn.mkldnn_reorder_conv2d_weight(w.to_mkldnn(), list(padding), list(stride), [1, 1], 1, list(x.shape))
    xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    return {'pytorch': lambda: F.conv2d(x, w, b, stride, padding),
            'matmul': lambda: conv2d_gemm(x, w, b, stride, padding),
            'prepacked': lambda: torch.ops.mkldnn._convolution_pointwise(x, wp, b, list(padding), list(stride), [1, 1], 1,
                                                                         'none', [], ''),
            'channels_last': lambda: F.conv2d(xc, wc, b, stride, padding)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--size', type=int, default=32, help='latent height and width')
    p.add_argument('--reps', type=int, default=7, help='timed calls of each way per shape')
    p.add_argument('--verbose-reps', type=int, default=5, help='calls per shape under ONEDNN_VERBOSE')
    a = p.parse_args()
    print(header(f'SD 1 UNet convolutions, batch {a.batch}, latent {a.size}x{a.size}, float32 CPU'))
    inputs = conv_inputs(a.batch, a.size)
    split, mm_child = onednn_split(list(inputs), a.verbose_reps)
    totals = dict.fromkeys(WAYS + ('policy', 'best'), 0.0)
    worst = dict.fromkeys(WAYS[1:], 0.0)
    fit = []  # (|W| MB, alpha, gamma - beta, break-even P*) per shape
    with torch.inference_mode():
        for key, (mod, x, count) in inputs.items():
            (xs, ws, stride, padding) = key
            fs = ways(mod, x, stride, padding)
            y = {k: f() for k, f in fs.items()}  # warm-up
            for k in worst: worst[k] = max(worst[k], ((y[k] - y['pytorch']).abs().max() / y['pytorch'].abs().max()).item())
            times = {k: [] for k in fs}
            for i in range(a.reps):
                for k in WAYS[i % 4:] + WAYS[:i % 4]:
                    t0 = time.perf_counter(); fs[k](); times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            n = y['pytorch'].shape[0] * y['pytorch'].shape[2] * y['pytorch'].shape[3]
            mb = mod.weight.numel() * 4 / 2**20
            reorder, conv = split.get((False, key), (float('nan'), float('nan')))
            cl_reorder = split.get((True, key), (float('nan'),))[0]
            alpha, beta, gamma = reorder / mb, conv / (mb * n), mm_child.get(key, float('nan')) / (mb * n)
            breakeven = alpha / (gamma - beta) if gamma > beta else float('inf')
            fit.append((mb, alpha, gamma - beta, breakeven))
            use_mm = _gemm_eligible(mod) and n <= GemmConv2d.max_positions  # what use_gemm_convs does on the CPU in float32
            for k in WAYS: totals[k] += count * med[k]
            totals['policy'] += count * med['matmul' if use_mm else 'pytorch']
            totals['best'] += count * min(med['pytorch'], med['matmul'])
            print(f"shape x {'x'.join(map(str, xs))} w {'x'.join(map(str, ws))} k {ws[-1]} stride {stride[0]} layers {count} "
                  f"P {n} W_MB {mb:.2f} " + ' '.join(f'{k}_ms {med[k]:.2f}' for k in WAYS) +
                  f" reorder_ms {reorder:.2f} conv_ms {conv:.2f} cl_reorder_ms {cl_reorder:.2f} alpha {alpha:.3f} beta {beta * 1e3:.2f}e-3 "
                  f"gamma {gamma * 1e3:.2f}e-3 breakeven_P {breakeven:.0f} policy {'matmul' if use_mm else 'pytorch'}",
                  flush=True)
    print('largest max-abs difference from pytorch, relative to max|pytorch|: ' +
          ', '.join(f'{k} {v:.1e}' for k, v in worst.items()))
    big = [f for f in fit if f[0] >= 8]  # the weights whose copy costs: the 8x8/16x16 levels' 640- and 1280-channel convs
    if big:
        print(f'cost model, weights >= 8 MB ({len(big)} shapes): alpha {statistics.median(f[1] for f in big):.3f} ms/MB, '
              f'gamma - beta {statistics.median(f[2] for f in big) * 1e3:.2f}e-3 ms/(MB*position), '
              f'break-even P* median {statistics.median(f[3] for f in big):.0f} '
              f'(range {min(f[3] for f in big):.0f}..{max(f[3] for f in big):.0f})')
    print("one forward's convolutions (ms): " + ' | '.join(f'{k} {totals[k]:.0f}' for k in WAYS) +
          f" | policy (matmul for k > 1 at P <= {GemmConv2d.max_positions}) {totals['policy']:.0f} | best of pytorch/matmul "
          f"per shape {totals['best']:.0f}")
    print('relative to pytorch: ' + ' | '.join(f"{k} {totals[k] / totals['pytorch']:.2f}"
                                               for k in WAYS[1:] + ('policy', 'best')))
    print(f'load avg after: {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    main()

"""Speed and memory guard: our UNet, run several ways, vs diffusers' UNet2DConditionModel at the full SD 1 size, same weights.

    flock /tmp/sd_bigmem.lock python bench/unet_bench.py          # CPU, fp32, batch 2, 32x32 latent, all variants
    python bench/unet_bench.py --variants ours,gemm --size 64      # a subset, a 512-pixel image
    python bench/unet_bench.py --compile                           # also try torch.compile with weight freezing
    python bench/unet_bench.py --device cuda --dtype float16 --size 64 --variants ours

Variants (all hold the very same weights; diffusers' model is built on the meta device and given our tensors through
diffusers' own `convert_ldm_unet_checkpoint`):
  diffusers      UNet2DConditionModel, as diffusers runs it by default
  ours           our UNet as built: plain nn.Conv2d (the policy off)
  gemm           ours with `use_gemm_convs` (chapter 2): CPU float32 convolutions with few output positions as a matmul
  prepacked      ours with every convolution's weight packed ONCE into oneDNN's inference layout, then oneDNN's
                 inference convolution (torch.ops.mkldnn._convolution_pointwise): what torch.compile's freezing emits
                 for a CPU convolution, without compiling anything. Bench only: private operators, CPU only.
  channels_last  ours with weights and input in channels-last memory format (model.to(memory_format=...))
  compiled       (--compile) torch.compile(ours) with torch._inductor.config.freezing = True; we print the compile time

Time: all variants live in ONE process and run in turn, the order rotating every round (A B C, B C A, ...), so that
drift in machine load hits all of them alike; we report each one's median and its ratio to diffusers, as the ratio
of medians and as the median of per-round ratios, for wall-clock time and for the process's CPU time (user + system,
all threads: on a machine shared with other jobs it is less sensitive than wall time to our threads being
descheduled). Outputs are compared with diffusers', relative to max|diffusers|, so we know all computed the same.

Memory (`--memory`, for diffusers, ours and gemm): each runs in its OWN fresh subprocess (weights of the same size,
random init), so none sees another's allocations or allocator caches. On CPU we reset the kernel's resident-set
high-water mark (`/proc/self/clear_refs` <- 5) after the model is built, run warm-up + forwards, and read `VmHWM`:
the peak resident memory while running. On CUDA, `torch.cuda.max_memory_allocated`. Not a test: it asserts nothing.
"""
import argparse, json, os, statistics, subprocess, sys, time, warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import header  # noqa: E402
from sd_book.resnet import use_gemm_convs  # noqa: E402
from sd_book.unet import UNet, UNetConfig  # noqa: E402

VARIANTS = ('diffusers', 'ours', 'gemm', 'prepacked', 'channels_last')


def ldm_yaml(c: UNetConfig) -> dict:
    "Our config inside the original LDM YAML (the fields diffusers' single-file converter reads)."
    return {'model': {'params': {'unet_config': {'params': c.ldm_params()},
                                 'first_stage_config': {'params': {'ddconfig': {'ch_mult': [1, 2, 4, 4]}}}}}}


def diffusers_config(cfg: UNetConfig) -> dict:
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return create_unet_diffusers_config_from_ldm(ldm_yaml(cfg), {}, image_size=512)


def diffusers_sharing(unet: UNet):
    "diffusers' UNet holding our very tensors (meta-device build + assign), converted by diffusers' own code."
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    dcfg = diffusers_config(unet.cfg)
    with torch.device('meta'): ref = UNet2DConditionModel(**dcfg)
    ckpt = {'model.diffusion_model.' + k: v for k, v in unet.state_dict().items()}
    ref.load_state_dict(convert_ldm_unet_checkpoint(ckpt, dcfg), strict=True, assign=True)
    return ref.eval()


class PrepackedConv2d(torch.nn.Module):
    "Bench only: `conv` with its weight packed into oneDNN's inference layout once per input shape, then no copy per call."
    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        self.conv, self.packed = conv, {}

    def forward(self, x):
        c = self.conv
        args = (list(c.padding), list(c.stride), list(c.dilation), c.groups)
        if tuple(x.shape) not in self.packed:
            self.packed[tuple(x.shape)] = torch._C._nn.mkldnn_reorder_conv2d_weight(c.weight.detach().to_mkldnn(), *args, list(x.shape))
        return torch.ops.mkldnn._convolution_pointwise(x, self.packed[tuple(x.shape)], c.bias, *args, 'none', [], '')


def module_copy(unet: UNet, share=lambda p: True) -> torch.nn.Module:
    "A copy of `unet`'s module tree (new module objects) whose parameters and buffers are the same tensors, where `share`."
    import copy
    return copy.deepcopy(unet, memo={id(p): p for p in [*unet.parameters(), *unet.buffers()] if share(p)})


def prepacked(unet: UNet) -> torch.nn.Module:
    "A copy of `unet` whose convolutions are `PrepackedConv2d` around the same weights."
    model = module_copy(unet)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Conv2d: setattr(parent, name, PrepackedConv2d(child))
    return model


def inputs(a, cfg, channels_last=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, cfg.in_channels, a.size, a.size, generator=g)
    ctx = torch.randn(a.batch, 77, cfg.context_dim, generator=g)  # SD's 77 text tokens
    t = torch.full((a.batch,), 500.0)
    dt = getattr(torch, a.dtype)
    if channels_last: x = x.contiguous(memory_format=torch.channels_last)
    return x.to(a.device, dt), t.to(a.device), ctx.to(a.device, dt)


def sync(device):
    if device.startswith('cuda'): torch.cuda.synchronize()


def rss_kb(field: str) -> int:
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'): return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(which: str, a):
    "Runs in its own process: build one model, then measure the peak memory of running it."
    from diffusers import UNet2DConditionModel  # imported by every child, so all carry the same library overhead
    torch.manual_seed(0)
    cfg, dt = getattr(UNetConfig, a.preset)(), getattr(torch, a.dtype)
    model = UNet2DConditionModel(**diffusers_config(cfg)) if which == 'diffusers' else UNet(cfg)
    if which == 'gemm': use_gemm_convs(model)
    model = model.eval().to(a.device, dt)
    x, t, c = inputs(a, cfg)
    f = (lambda: model(x, t, encoder_hidden_states=c, return_dict=False)[0]) if which == 'diffusers' else (lambda: model(x, t, c))
    if a.device == 'cpu':
        open('/proc/self/clear_refs', 'w').write('5')  # reset VmHWM to the current resident size
        base = rss_kb('VmRSS')
    else:
        sync(a.device); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated() // 1024
    with torch.inference_mode():
        for _ in range(1 + a.mem_reps): f()
    sync(a.device)
    peak = rss_kb('VmHWM') if a.device == 'cpu' else torch.cuda.max_memory_allocated() // 1024
    print(json.dumps({'which': which, 'base_mib': base / 1024, 'peak_mib': peak / 1024}))


def build(a, variants):
    "{variant: (forward function of (x, t, c), inputs)} sharing one set of weights."
    torch.manual_seed(0)
    cfg, dt = getattr(UNetConfig, a.preset)(), getattr(torch, a.dtype)
    ours = UNet(cfg).eval().to(a.device, dt)
    fs = {}
    for v in variants:
        if v == 'diffusers':
            ref = diffusers_sharing(ours)
            fs[v] = (lambda m: lambda x, t, c: m(x, t, encoder_hidden_states=c, return_dict=False)[0])(ref)
        elif v == 'ours': fs[v] = ours
        elif v == 'gemm': fs[v] = use_gemm_convs(module_copy(ours))  # same weights; `ours` keeps plain convolutions
        elif v == 'prepacked': fs[v] = prepacked(ours)
        elif v == 'channels_last':  # its own copy of the 4-D (convolution) weights, converted; the rest shared
            fs[v] = module_copy(ours, share=lambda p: p.ndim != 4).to(memory_format=torch.channels_last)
        elif v == 'compiled':
            import torch._inductor.config as ic
            ic.freezing = True  # weights become constants: folded and pre-packed at compile time
            fs[v] = torch.compile(module_copy(ours))
    return cfg, {v: (f, inputs(a, cfg, channels_last=(v == 'channels_last'))) for v, f in fs.items()}


def timing(a, variants):
    cfg, runs = build(a, variants)
    wall, cpu, out, first = {v: [] for v in runs}, {v: [] for v in runs}, {}, {}
    with torch.inference_mode():
        for v, (f, (x, t, c)) in runs.items():  # warm-up (and compile), outputs
            sync(a.device); t0 = time.perf_counter()
            out[v] = f(x, t, c).float().contiguous(); sync(a.device)
            first[v] = time.perf_counter() - t0
        names = list(runs)
        for i in range(a.reps):
            for v in names[i % len(names):] + names[:i % len(names)]:
                f, (x, t, c) = runs[v]
                sync(a.device); t0, c0 = time.perf_counter(), time.process_time()
                f(x, t, c); sync(a.device)
                wall[v].append(time.perf_counter() - t0); cpu[v].append(time.process_time() - c0)
    return wall, cpu, out, first


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    p.add_argument('--preset', default='sd_v1', choices=['sd_v1', 'sd_v2', 'tiny'], help='UNetConfig preset (tiny: a smoke test)')
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--size', type=int, default=32, help='latent height and width (32 = a 256-pixel image)')
    p.add_argument('--reps', type=int, default=8, help='timed rounds (each runs every variant once, in rotating order)')
    p.add_argument('--variants', default=','.join(VARIANTS), help='comma-separated, from ' + ', '.join(VARIANTS))
    p.add_argument('--compile', action='store_true', help='add the variant torch.compile(ours) with weight freezing')
    p.add_argument('--memory', action='store_true', help='also measure peak memory of diffusers, ours and gemm')
    p.add_argument('--mem-reps', type=int, default=1, help='forwards after the warm-up in each memory process')
    p.add_argument('--memory-child', choices=['diffusers', 'ours', 'gemm'], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.memory_child: return memory_child(a.memory_child, a)
    variants = [v for v in a.variants.split(',') if v] + (['compiled'] if a.compile else [])
    if a.device != 'cpu': variants = [v for v in variants if v not in ('gemm', 'prepacked')]  # CPU-only paths
    if 'diffusers' not in variants: variants.insert(0, 'diffusers')

    print(header(f'UNet {a.preset}, device {a.device}, {a.dtype}, batch {a.batch}, latent {a.size}x{a.size}'))
    wall, cpu, out, first = timing(a, variants)
    ref = out['diffusers']
    for v in variants:
        err = ((out[v] - ref).abs().max() / ref.abs().max()).item()
        print(f'{v:>13}: first call {first[v]:7.1f} s; output vs diffusers: max-abs difference {err:.1e} of max|diffusers|')
    for what, times in (('wall', wall), ('CPU', cpu)):
        med = {v: statistics.median(t) for v, t in times.items()}
        for v, t in times.items():
            ratios = [o / d for o, d in zip(t, times['diffusers'])]
            print(f'{v:>13}: {what:>4} time median {med[v]:.3f} s (min {min(t):.3f}, max {max(t):.3f}, {len(t)} runs); '
                  f'/ diffusers: {med[v] / med["diffusers"]:.3f} ratio of medians, {statistics.median(ratios):.3f} median per round')
    if a.memory:
        for which in ('diffusers', 'ours', 'gemm'):
            r = subprocess.run([sys.executable, __file__, *sys.argv[1:], '--memory-child', which], capture_output=True, text=True)
            if r.returncode: sys.exit(r.stderr)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            print(f'{which:>13}: peak memory {m["peak_mib"]:8.0f} MiB, of which {m["peak_mib"] - m["base_mib"]:6.0f} MiB '
                  f'above the loaded model ({m["base_mib"]:.0f} MiB) [{"VmHWM" if a.device == "cpu" else "max_memory_allocated"}]')
    print(f'load avg after: {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    main()

"""Speed and memory guard: our UNet vs diffusers' UNet2DConditionModel at the full SD 1 size, same weights.

    flock /tmp/sd_bigmem.lock python bench/unet_bench.py                     # CPU, fp32, batch 2, 32x32 latent
    python bench/unet_bench.py --device cuda --dtype float16 --size 64        # on a GPU

Time: both models live in ONE process and share the very same weight tensors (diffusers' model is built on the meta
device and given our tensors through diffusers' own `convert_ldm_unet_checkpoint`). They run alternately, A B then
B A, so that drift in machine load hits both equally; we report the median of each and the median of the per-pair
ratios ours/diffusers, for wall-clock time and for the process's CPU time (user + system, all threads: on a machine
shared with other jobs it is less sensitive than wall time to our threads being descheduled). Their outputs are compared too, so we know both computed the same thing.

Memory: each model runs in its OWN fresh subprocess (weights of the same size, random init), so neither sees the
other's allocations or allocator caches. On CPU we reset the kernel's resident-set high-water mark
(`/proc/self/clear_refs` ← 5) after the model is built, run warm-up + timed forwards, and read `VmHWM`: the peak
resident memory while running, counted by the kernel, with no Python-level tracing to slow or distort anything.
We print it absolute and minus the resident size before the first forward (= activations, workspaces, caches).
On CUDA we use `torch.cuda.max_memory_allocated` the same way. Not a test: it prints numbers, it asserts nothing.

Profile (`--profile`): after the timing, `torch.profiler` records `--profile-reps` forwards of each model; we print each
one's share of self CPU time by kind of kernel (convolution, matmul, attention, the rest) and its top operators.
"""
import argparse, json, os, statistics, subprocess, sys, time, warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from sd_book.unet import UNet, UNetConfig  # noqa: E402


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


def inputs(a, cfg):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, cfg.in_channels, a.size, a.size, generator=g)
    ctx = torch.randn(a.batch, 77, cfg.context_dim, generator=g)  # SD's 77 text tokens
    t = torch.full((a.batch,), 500.0)
    dt = getattr(torch, a.dtype)
    if a.channels_last: x = x.contiguous(memory_format=torch.channels_last)
    return x.to(a.device, dt), t.to(a.device), ctx.to(a.device, dt)


def runner(which: str, model, a):
    if a.channels_last: model.to(memory_format=torch.channels_last)
    if which == 'ours': return lambda x, t, c: model(x, t, c)
    return lambda x, t, c: model(x, t, encoder_hidden_states=c, return_dict=False)[0]


def sync(device):
    if device.startswith('cuda'): torch.cuda.synchronize()


def rss_kb(field: str) -> int:
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'): return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(which: str, a):
    "Runs in its own process: build one model, then measure the peak memory of running it."
    from diffusers import UNet2DConditionModel  # imported by both children, so both carry the same library overhead
    torch.manual_seed(0)
    cfg, dt = getattr(UNetConfig, a.preset)(), getattr(torch, a.dtype)
    model = UNet(cfg) if which == 'ours' else UNet2DConditionModel(**diffusers_config(cfg))
    model = model.eval().to(a.device, dt)
    f, (x, t, c) = runner(which, model, a), inputs(a, cfg)
    if a.device == 'cpu':
        open('/proc/self/clear_refs', 'w').write('5')  # reset VmHWM to the current resident size
        base = rss_kb('VmRSS')
    else:
        sync(a.device); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated() // 1024
    with torch.inference_mode():
        for _ in range(1 + a.mem_reps): f(x, t, c)
    sync(a.device)
    peak = rss_kb('VmHWM') if a.device == 'cpu' else torch.cuda.max_memory_allocated() // 1024
    print(json.dumps({'which': which, 'base_mib': base / 1024, 'peak_mib': peak / 1024}))


def timing(a):
    torch.manual_seed(0)
    cfg, dt = getattr(UNetConfig, a.preset)(), getattr(torch, a.dtype)
    ours = UNet(cfg).eval().to(a.device, dt)
    theirs = diffusers_sharing(ours)
    fs = {'ours': runner('ours', ours, a), 'diffusers': runner('diffusers', theirs, a)}
    x, t, c = inputs(a, cfg)
    wall, cpu = {'ours': [], 'diffusers': []}, {'ours': [], 'diffusers': []}
    with torch.inference_mode():
        out = {k: f(x, t, c) for k, f in fs.items()}  # warm-up, and the outputs must agree
        err = (out['ours'].float() - out['diffusers'].float()).abs().max().item()
        for i in range(a.reps):
            for k in (('ours', 'diffusers') if i % 2 == 0 else ('diffusers', 'ours')):
                sync(a.device); t0, c0 = time.perf_counter(), time.process_time()
                fs[k](x, t, c); sync(a.device)
                wall[k].append(time.perf_counter() - t0); cpu[k].append(time.process_time() - c0)
    return wall, cpu, err


GROUPS = {'convolution': ('conv',), 'matmul (addmm/mm/bmm)': ('addmm', 'aten::mm', 'bmm'),
          'attention (SDPA)': ('scaled_dot_product', 'flash_attention')}

def profile(a):
    "Self CPU time of each model's operators, grouped by kind (every op is counted once: self time, not total)."
    from torch.profiler import ProfilerActivity, profile as tprofile
    torch.manual_seed(0)
    cfg, dt = getattr(UNetConfig, a.preset)(), getattr(torch, a.dtype)
    ours = UNet(cfg).eval().to(a.device, dt)
    fs = {'ours': runner('ours', ours, a), 'diffusers': runner('diffusers', diffusers_sharing(ours), a)}
    x, t, c = inputs(a, cfg)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device.startswith('cuda') else [])
    for k, f in fs.items():
        with torch.inference_mode():
            f(x, t, c)  # warm-up, outside the profile
            with tprofile(activities=acts) as prof:
                for _ in range(a.profile_reps): f(x, t, c)
                sync(a.device)
        ev = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in ev)
        shares = {g: sum(e.self_cpu_time_total for e in ev if any(n in e.key for n in names)) / total for g, names in GROUPS.items()}
        print(f'{k:>9}: self CPU time {total / 1e6 / a.profile_reps:.3f} s per forward; ' +
              ', '.join(f'{g} {v:.0%}' for g, v in shares.items()) + f', the rest {1 - sum(shares.values()):.0%}')
        print(ev.table(sort_by='self_cpu_time_total', row_limit=a.profile_rows))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    p.add_argument('--preset', default='sd_v1', choices=['sd_v1', 'sd_v2', 'tiny'], help='UNetConfig preset (tiny: a smoke test)')
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--size', type=int, default=32, help='latent height and width (32 = a 256-pixel image)')
    p.add_argument('--reps', type=int, default=8, help='timed runs of each model (alternating)')
    p.add_argument('--mem-reps', type=int, default=1, help='forwards after the warm-up in each memory process')
    p.add_argument('--channels-last', action='store_true', help='run BOTH models in channels-last memory format')
    p.add_argument('--skip-memory', action='store_true')
    p.add_argument('--profile', action='store_true', help='also print a torch.profiler breakdown of each model')
    p.add_argument('--profile-reps', type=int, default=2, help='profiled forwards of each model')
    p.add_argument('--profile-rows', type=int, default=12, help='top operators listed per model')
    p.add_argument('--memory-child', choices=['ours', 'diffusers'], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.memory_child: return memory_child(a.memory_child, a)

    load0 = os.getloadavg()
    print(f'{time.strftime("%Y-%m-%d %H:%M %Z")} | torch {torch.__version__} | UNet {a.preset} | device {a.device} | {a.dtype} | '
          f'batch {a.batch}, latent {a.size}x{a.size} | threads {torch.get_num_threads()} of {os.cpu_count()} CPUs | '
          f'load avg {load0[0]:.1f}' + (' | channels-last' if a.channels_last else ''))
    wall, cpu, err = timing(a)
    print(f'outputs agree: max-abs difference {err:.2e}')
    for what, times in (('wall', wall), ('CPU', cpu)):
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = [o / d for o, d in zip(times['ours'], times['diffusers'])]
        for k, v in times.items():
            print(f'{k:>9}: {what:>4} time median {med[k]:.3f} s  (min {min(v):.3f}, max {max(v):.3f}, {len(v)} runs)')
        print(f'{what:>4} time ratio ours/diffusers: {med["ours"] / med["diffusers"]:.3f} (ratio of medians), '
              f'{statistics.median(ratios):.3f} (median of per-pair ratios)')
    if not a.skip_memory:
        args = sys.argv[1:]
        for which in ('ours', 'diffusers'):
            r = subprocess.run([sys.executable, __file__, *args, '--memory-child', which], capture_output=True, text=True)
            if r.returncode: sys.exit(r.stderr)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            print(f'{which:>9}: peak memory {m["peak_mib"]:8.0f} MiB, of which {m["peak_mib"] - m["base_mib"]:6.0f} MiB '
                  f'above the loaded model ({m["base_mib"]:.0f} MiB) [{"VmHWM" if a.device == "cpu" else "max_memory_allocated"}]')
    if a.profile: profile(a)
    print(f'load avg after: {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    main()

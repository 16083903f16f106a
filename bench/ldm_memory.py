"""The OOM question: peak memory (and step time) of chapter 12's LDM training step against the batch size, with and
without gradient accumulation, in float32 and under bf16 autocast.

    python bench/ldm_memory.py --threads 1                      # batches 32..512 (bf16 up to 128), k = 1 and 4: 2 min on a core with bf16 instructions, 10 without
    python bench/ldm_memory.py --quick                          # batches 32 and 128 (bf16 at 32 only), 2 steps: about 2 min (a smoke test)
    python bench/ldm_memory.py --batches 64,256 --accum 1,2,8   # any grid
    python bench/ldm_memory.py --device cuda                    # on a GPU: torch.cuda.max_memory_allocated as well

The step is the `Trainer`'s (chapter 11) on `LDMTask` (chapter 12) with the `cpu` preset's class-conditional UNet, on
the MNIST latents of chapter 11's autoencoder (runs/ch11/kl; `--random-latents`: random ones of the same shape):
gather the batch, draw the step's noise, forward, backward, clip, AdamW, EMA update (`Trainer.train_step`, what
`fit` runs). With k = `grad_accum` micro-batches, a batch of B runs k forward+backward passes on the rows (and the
random draws) that k DDP processes would get (`local_slice`, `StepRandom(rank=i, world=k)`), each loss divided by k,
then one clip and one optimiser step: the same gradient as one batch of B, up to rounding (`--grad-accum K` of
`sd-book train ldm`). bf16 is
`torch.autocast(device, torch.bfloat16)` around the forward and the loss: the `Trainer`'s `mixed_precision='bf16'`
(its default, 'auto', turns it on on a GPU only). CPUs without bf16 instructions (AVX-512 BF16 / AMX; e.g. AMD Zen 3) compute bf16 slowly:
the time column says how slowly.

Memory: each setting runs in its OWN fresh subprocess, so no setting sees another's allocations. After the model,
optimiser and data are built, the kernel's resident-set high-water mark is reset (`/proc/self/clear_refs` <- 5) and
the current RSS noted (the baseline); after a warm-up step and the timed steps, `VmHWM` is the peak resident memory
of training. We print the peak and the peak minus the baseline (what training adds: gradients, AdamW's two moments,
the EMA copy is in the baseline, activations kept for backward, allocator slack). Where clear_refs cannot be written
we fall back to `getrusage(RUSAGE_SELF).ru_maxrss` (the peak since the process began, imports included). On CUDA,
also `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`. tracemalloc is not used: it does not see
torch's allocations. Time: the median wall and CPU seconds per step of each child, run one after another (not
interleaved): compare them loosely on a loaded machine. Not a test: it asserts nothing.

The helpers here (`PeakMemory`, `run_child`, `ldm_trainer`, `ldm_step`) are shared by ldm_seed_bench.py and ldm_attention.py.
"""
import argparse, json, os, resource, statistics, subprocess, sys, tempfile, time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'bench'))
from machine import header  # noqa: E402
from sd_book.ldm import LDM_PRESETS, LDMTask, LatentDataset, NUM_CLASSES, cached_latents  # noqa: E402
from sd_book.train import Trainer  # noqa: E402
from sd_book.unet import UNet  # noqa: E402

AUTOENCODER = REPO / 'runs' / 'ch11' / 'kl'


# ---------------------------------------------------------------- shared helpers
def _status_kb(key: str) -> int | None:
    try:
        for line in open('/proc/self/status'):
            if line.startswith(key + ':'): return int(line.split()[1])
    except OSError: pass
    return None


class PeakMemory:
    "Peak resident memory of this process from `start()` on (VmHWM after a clear_refs reset), and CUDA's peak allocation."
    def __init__(self, device):
        self.device = torch.device(device)

    def start(self):
        if self.device.type == 'cuda': torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        try:
            with open('/proc/self/clear_refs', 'w') as f: f.write('5')  # resets VmHWM to the current RSS
            self.method = 'VmHWM after clear_refs'
        except OSError: self.method = 'ru_maxrss (peak since the process began)'
        self.baseline_mb = (_status_kb('VmRSS') or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024

    def stop(self) -> dict:
        hwm = _status_kb('VmHWM') if self.method.startswith('VmHWM') else None
        peak = (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
        r = dict(rss_baseline_mb=round(self.baseline_mb, 1), rss_peak_mb=round(peak, 1), rss_added_mb=round(peak - self.baseline_mb, 1), method=self.method)
        if self.device.type == 'cuda':
            torch.cuda.synchronize(); r['cuda_peak_allocated_mb'] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return r


def run_child(script: str, spec: dict, timeout: float = 1800) -> dict:
    "Run `script --child SPEC` in a fresh Python process and return the JSON dict it prints on its `RESULT ` line."
    p = subprocess.run([sys.executable, script, '--child', json.dumps(spec)], capture_output=True, text=True, timeout=timeout)
    lines = [l for l in p.stdout.splitlines() if l.startswith('RESULT ')]
    if p.returncode or not lines: return dict(error=(p.stderr or p.stdout).strip().splitlines()[-1:] or [f'exit {p.returncode}'])
    return json.loads(lines[-1][len('RESULT '):])


def set_threads(n: int | None):
    if n: torch.set_num_threads(n)


def mnist_latents(autoencoder=AUTOENCODER, random: bool = False) -> tuple:
    "Chapter 12's MNIST training latents (scaled, (60000, 4, 8, 8)) and labels; `random`: N(0, 1) ones of that shape."
    if random or not (Path(autoencoder) / 'config.json').exists():
        g = torch.Generator().manual_seed(0)
        return torch.randn(60000, 4, 8, 8, generator=g), torch.randint(10, (60000,), generator=g)
    return cached_latents(autoencoder, 'mnist', 'train', 32)


class _NoVAE(torch.nn.Module):
    "Stands in for the autoencoder when only the training step runs (LDMTask uses it for sample grids alone)."


def ldm_trainer(batch_size: int, latents, labels, device='cpu', unet_cfg=None, vae=None, out=None, **train) -> Trainer:
    "A `Trainer` on `LDMTask` (eps, class-conditional) with the cpu preset (or `unet_cfg`), as `train_ldm` builds it, ready for `ldm_step`."
    p = LDM_PRESETS['cpu']
    cfg = unet_cfg or replace(p.unet, in_channels=latents.shape[1], out_channels=latents.shape[1], num_classes=NUM_CLASSES['mnist'] + 1)
    torch.manual_seed(0)
    unet = UNet(cfg)
    task = LDMTask(unet, vae if vae is not None else _NoVAE(), 'eps', None, 0.1)
    out = out or tempfile.mkdtemp(prefix='ldm_bench_')  # the Trainer writes nothing until fit(); we never call fit
    return Trainer(task, LatentDataset(latents, labels), replace(p.train, out=str(out), batch_size=batch_size, progress=False, **train), device)


def ldm_step(tr: Trainer, step: int, accum: int = 1) -> float:
    "One training step as `Trainer.fit` runs it (`Trainer.train_step` at `step`), in `accum` micro-batches (`grad_accum`); returns the loss."
    tr.step, tr.cfg.grad_accum = step, accum
    logs = tr.train_step()
    return sum(logs['loss']) / len(logs['loss'])


def sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()


def timed(fn, device) -> tuple:  # (wall s, CPU s)
    sync(device); w, c = time.perf_counter(), time.process_time()
    fn(); sync(device)
    return time.perf_counter() - w, time.process_time() - c


class Tee:
    "Print to stdout and collect the lines for the results file."
    def __init__(self): self.lines = []
    def __call__(self, *a):
        s = ' '.join(str(x) for x in a); print(s, flush=True); self.lines.append(s)
    def write(self, path, first: list):
        path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('\n'.join(first + self.lines) + '\n')
        print(f'wrote {path}')


def results_path(name: str, device, quick: bool) -> Path:
    return REPO / 'bench' / 'results' / f"{name}_{torch.device(device).type}_{time.strftime('%Y-%m-%d')}{'_quick' if quick else ''}.txt"


# ---------------------------------------------------------------- this bench
def child(spec: dict) -> dict:
    "One setting in this fresh process: build, reset the peak, warm up, time `steps` steps, read the peak."
    set_threads(spec['threads']); dev = spec['device']
    if torch.device(dev).type == 'cpu': torch.set_flush_denormal(True)  # as Trainer.fit
    z, y = mnist_latents(random=spec['random_latents'])
    tr = ldm_trainer(spec['batch'], z, y, dev, mixed_precision='bf16' if spec['precision'] == 'bf16' else 'no')
    mem = PeakMemory(dev)
    mem.start()
    ldm_step(tr, 0, spec['accum'])  # warm-up: allocates AdamW's moments and the gradients
    wall, cpu = [], []
    for s in range(1, spec['steps'] + 1):
        w, c = timed(lambda: ldm_step(tr, s, spec['accum']), dev); wall.append(w); cpu.append(c)
    return dict(spec, **mem.stop(), wall_s=statistics.median(wall), cpu_s=statistics.median(cpu),
                params=sum(p.numel() for p in tr.task.unet.parameters()))


def accumulation_check(z, y, device, k: int = 4, batch: int = 32) -> str:
    "The gradient of one step in k micro-batches against one batch (the optimiser step skipped): the same up to rounding."
    grads = []
    for kk in (1, k):
        tr = ldm_trainer(batch, z, y, device)
        tr.opts['unet'].step = lambda: None  # keep the weights; compare the gradients
        loss = ldm_step(tr, 0, kk)
        grads.append((loss, torch.cat([p.grad.flatten() for p in tr.task.unet.parameters()])))
    err, ref = (grads[0][1] - grads[1][1]).abs().max().item(), grads[0][1].abs().max().item()
    return (f"check: batch {batch} in {k} micro-batches vs one: loss {grads[1][0]:.6f} vs {grads[0][0]:.6f}, "
            f"max |Δ grad| {err:.1e} = {err / ref / 2**-23:.0f} × 2^-23 × max|grad| (sums split {k} ways round differently)")


def conv_kernels(device) -> str:
    "The aten convolution operators a 3×3 convolution runs in fp32 and under bf16 autocast (forward + backward) on `device`."
    from torch.profiler import profile, ProfilerActivity
    conv, x, found = nn.Conv2d(64, 64, 3, padding=1).to(device), torch.randn(8, 64, 8, 8, device=device), {}
    for prec in ('fp32', 'bf16'):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=prec == 'bf16'): y = conv(x)
            y.float().sum().backward()
        found[prec] = ', '.join(sorted({e.key for e in prof.key_averages() if 'conv' in e.key and e.key.startswith('aten::_')
                                        or 'mkldnn' in e.key or 'cudnn' in e.key})) or '?'
    return f"convolution kernels: fp32 {found['fp32']}; bf16 {found['bf16']}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batches', default='32,64,128,256,512', help='effective batch sizes')
    ap.add_argument('--accum', default='1,4', help='micro-batches per step (k); settings with B/k < 8 are skipped')
    ap.add_argument('--precisions', default='fp32,bf16')
    ap.add_argument('--steps', type=int, default=3, help='timed steps per setting (after one warm-up step)')
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--bf16-max-batch', type=int, default=None, help='run bf16 only up to this batch (default on a CPU: 128; CPUs without bf16 units are slow at it)')
    ap.add_argument('--random-latents', action='store_true', help='random latents of the same shape (no autoencoder needed)')
    ap.add_argument('--quick', action='store_true', help='batches 32,128 (bf16 at 32 only), 2 steps: a smoke test, not the figures')
    ap.add_argument('--out', default=None, help='results file (default bench/results/ldm_memory_<device>_<date>[_quick].txt)')
    ap.add_argument('--child', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print('RESULT ' + json.dumps(child(json.loads(a.child)))); return
    if a.quick: a.batches, a.steps, a.bf16_max_batch = '32,128', 2, 32
    if a.bf16_max_batch is None and torch.device(a.device).type == 'cpu': a.bf16_max_batch = 128
    set_threads(a.threads)
    out, log = Path(a.out) if a.out else results_path('ldm_memory', a.device, a.quick), Tee()
    first = [header(f'LDM training step memory, cpu preset UNet, device {a.device}'), '$ python ' + ' '.join(sys.argv)]
    if a.quick: first.append('QUICK RUN (--quick): few steps, on a machine shared with other jobs; a smoke test, NOT the final figures')
    for l in first: print(l)
    z, y = mnist_latents(random=a.random_latents)
    log(f"latents {tuple(z.shape[1:])} ({'random' if a.random_latents else 'MNIST, ' + str(AUTOENCODER.relative_to(REPO))}); "
        f"each setting in a fresh subprocess: 1 warm-up + {a.steps} timed steps")
    log(accumulation_check(z, y, a.device))
    log(conv_kernels(a.device))
    cuda_col = f"{' cuda MB':>9}" if a.device != 'cpu' else ''
    log(f"{'batch':>5} {'k':>2} {'micro':>5} {'prec':>5} | {'peak RSS MB':>11} {'added MB':>9} {'baseline MB':>11}{cuda_col} | "
        f"{'s/step':>7} {'CPU s':>7} {'img/s':>7}")
    t0 = time.time()
    for B in map(int, a.batches.split(',')):
        for k in map(int, a.accum.split(',')):
            if B % k or B // k < 8: continue
            for prec in a.precisions.split(','):
                if prec == 'bf16' and a.bf16_max_batch and B > a.bf16_max_batch: continue
                spec = dict(batch=B, accum=k, precision=prec, steps=a.steps, threads=torch.get_num_threads(), device=a.device,
                            random_latents=a.random_latents)
                r = run_child(__file__, spec)
                if 'error' in r: log(f"{B:>5} {k:>2} {B // k:>5} {prec:>5} | failed: {r['error']}"); continue
                cuda = f" {r['cuda_peak_allocated_mb']:>8.0f}" if 'cuda_peak_allocated_mb' in r else ''
                log(f"{B:>5} {k:>2} {B // k:>5} {prec:>5} | {r['rss_peak_mb']:>11.0f} {r['rss_added_mb']:>9.0f} {r['rss_baseline_mb']:>11.0f}{cuda}"
                    f" | {r['wall_s']:>7.3f} {r['cpu_s']:>7.3f} {B / r['wall_s']:>7.0f}")
    log(f"memory method: {r.get('method', '?')}; UNet {r.get('params', 0):,} parameters; 'added' = peak − RSS after building "
        f"(gradients, AdamW moments, activations, allocator slack); {time.time() - t0:.0f} s in all; load avg now {os.getloadavg()[0]:.1f}")
    log.write(out, first)


if __name__ == '__main__':
    main()

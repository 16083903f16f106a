"""Flash attention in training: the fused `F.scaled_dot_product_attention` path of the book's `CrossAttention` against the
written-out softmax(q kᵀ/√d) v, in whole LDM training steps (forward, backward, AdamW), time and peak memory.

    python bench/ldm_attention.py --threads 2             # latents 8, 16, 32 px, batch 32, 6 rounds + memory: about 12 min on 2 quiet cores
    python bench/ldm_attention.py --quick                 # latents 8 and 16, 2 rounds, memory at 16 only: about 2-3 min, a smoke test
    python bench/ldm_attention.py --sizes 32,64 --batch 8 --device cuda

How sd_book chooses the path: it does not. `sd_book.attention.CrossAttention.forward` always calls
`F.scaled_dot_product_attention` (torch then picks a kernel: on a CPU its flash-attention kernel for fp32/bf16 without
mask or dropout, printed below); `sd_book.attention.attention` is the written-out formula, kept for reading and never
called by a module. There is no switch, so this bench swaps `CrossAttention.forward` for the same projections around
`attention(q, k, v)` while a step runs (`written_out()` below). The minimal hook that would make this a switch in the
book: a module-level `ATTENTION = F.scaled_dot_product_attention` in sd_book/attention.py (nbs/03_attention.ipynb) that
`CrossAttention.forward` calls, so that `sd_book.attention.ATTENTION = attention` selects the written-out path.

The models: chapter 12's cpu preset UNet (64 channels, levels ×1 ×2, one ResnetBlock each, class-conditional) with
SpatialTransformers added at the lowest level and in the middle block ('lowest'), or at every level and in the middle
('every'), heads of 64 channels (SD 2's width); 'none' is the preset itself, no attention (the reference cost). Our
UNet asks for a text context whenever it has attention, and chapter 12 has no text: the bench passes a one-token zero
context of width 64 (the blocks' cross-attention then costs O(tokens); their self-attention over all H·W tokens is what
grows). Latents are random, 4 channels, of the given size: 8 px is the MNIST latent of chapter 12; 32 px is SD's at 256 px.

Time: all variants in ONE process, run in turn with the order rotating every round; each variant has its own model,
the two attention paths share it. We print the median wall and CPU seconds per step and the ratio written-out / SDPA.
Memory (`--memory`, default on): each (size, model, path) in its own fresh subprocess, peak RSS as in ldm_memory.py
(and CUDA's peak allocation on a GPU). Before timing, each attention model computes one step's gradients both ways:
the same up to rounding (printed). Not a test: it asserts nothing.
"""
import argparse, contextlib, json, os, statistics, sys, time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ldm_memory import PeakMemory, Tee, ldm_step, ldm_trainer, results_path, run_child, set_threads, timed  # noqa: E402
from machine import header  # noqa: E402
import sd_book.attention as A  # noqa: E402
from sd_book.ldm import LDM_PRESETS  # noqa: E402

MODELS = ('none', 'lowest', 'every')
CONTEXT_DIM = 64


def _forward_written_out(self, x, context=None):  # CrossAttention.forward with the written-out attention
    context = x if context is None else context
    q, k, v = (A.split_heads(p(t), self.num_heads) for p, t in ((self.to_q, x), (self.to_k, context), (self.to_v, context)))
    return self.to_out(A.merge_heads(A.attention(q, k, v)))  # (B, h, N, d) -> (B, N, h·d)


@contextlib.contextmanager
def written_out(on: bool = True):
    "Run the book's CrossAttention with softmax(q kᵀ/√d) v written out (sd_book.attention.attention) instead of SDPA."
    fused = A.CrossAttention.forward
    if on: A.CrossAttention.forward = _forward_written_out
    try: yield
    finally: A.CrossAttention.forward = fused


class WithContext(nn.Module):
    "The UNet given a one-token zero context (LDMTask calls net(x, t, class_labels=...); a UNet with attention wants a context)."
    def __init__(self, unet): super().__init__(); self.unet = unet
    def forward(self, x, t, class_labels=None):
        return self.unet(x, t, context=x.new_zeros(len(x), 1, CONTEXT_DIM), class_labels=class_labels)


def unet_config(model: str):
    p = LDM_PRESETS['cpu'].unet
    base = replace(p, in_channels=4, out_channels=4, num_classes=11)
    if model == 'none': return base
    levels = tuple(range(len(p.channel_mult))) if model == 'every' else (len(p.channel_mult) - 1,)
    return replace(base, attention_levels=levels, mid_attention=True, num_heads=None, head_channels=64, context_dim=CONTEXT_DIM)


def build(model: str, size: int, batch: int, device):
    "A Trainer on LDMTask for `model` on random latents of `size` px."
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(max(4 * batch, 256), 4, size, size, generator=g), torch.randint(10, (max(4 * batch, 256),), generator=g)
    tr = ldm_trainer(batch, z, y, device, unet_cfg=unet_config(model))
    if model != 'none': tr.task.distribute(WithContext)
    return tr


def tokens(model: str, size: int) -> str:
    "Tokens each self-attention sees, per level with attention (the middle block's last)."
    cfg = unet_config(model)
    n = [(size >> l) ** 2 for l in cfg.attention_levels] + ([(size >> (len(cfg.channel_mult) - 1)) ** 2] if cfg.mid_attention else [])
    return '/'.join(map(str, n)) or '-'


def same_gradients(model: str, size: int, batch: int, device) -> str:
    "One step's gradients with SDPA and written out, from the same weights and batch (the optimiser step skipped)."
    grads = []
    for on in (False, True):
        tr = build(model, size, batch, device); tr.opts['unet'].step = lambda: None
        with written_out(on): ldm_step(tr, 0)
        grads.append(torch.cat([p.grad.flatten() for p in tr.task.unet.parameters()]))
    err, ref = (grads[0] - grads[1]).abs().max().item(), grads[0].abs().max().item()
    return f"max |Δ grad| {err:.1e} = {err / ref / 2**-23:.0f} × 2^-23 × max|grad|"


def sdpa_kernels(tr) -> str:
    "The aten operators that one SDPA step of `tr` runs for attention (which kernel torch picked)."
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof: ldm_step(tr, 0)
    names = sorted({e.key for e in prof.key_averages() if 'attention' in e.key.lower() and e.key.startswith('aten::_')})
    return ', '.join(names) or 'none found'


def child(spec: dict) -> dict:
    "One (size, model, path) alone in this fresh process: peak memory over a warm-up and `steps` steps."
    set_threads(spec['threads']); torch.set_flush_denormal(True)
    tr = build(spec['model'], spec['size'], spec['batch'], spec['device'])
    mem = PeakMemory(spec['device']); mem.start()
    with written_out(spec['path'] == 'written'):
        for s in range(spec['steps'] + 1): ldm_step(tr, s)
    return dict(spec, **mem.stop())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sizes', default='8,16,32', help='latent sizes (px)')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--models', default=','.join(MODELS))
    ap.add_argument('--reps', type=int, default=6, help='timed rounds')
    ap.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--no-memory', dest='memory', action='store_false')
    ap.add_argument('--quick', action='store_true', help='sizes 8,16, 2 rounds, memory at 16 px only: a smoke test, not the figures')
    ap.add_argument('--out', default=None, help='results file (default bench/results/ldm_attention_<device>_<date>[_quick].txt)')
    ap.add_argument('--child', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print('RESULT ' + json.dumps(child(json.loads(a.child)))); return
    if a.quick: a.sizes, a.reps = '8,16', 2
    set_threads(a.threads); torch.set_flush_denormal(True)
    sizes, models = [int(s) for s in a.sizes.split(',')], [m for m in a.models.split(',') if m]
    out, log = Path(a.out) if a.out else results_path('ldm_attention', a.device, a.quick), Tee()
    first = [header(f'LDM training step, SDPA vs written-out attention, batch {a.batch}, device {a.device}'), '$ python ' + ' '.join(sys.argv)]
    if a.quick: first.append('QUICK RUN (--quick): sizes 8,16, 2 rounds, on a machine shared with other jobs; a smoke test, NOT the final figures')
    for l in first: print(l)
    variants, trainers = [], {}
    for size in sizes:
        for m in models:
            trainers[size, m] = build(m, size, a.batch, a.device)
            variants += [(size, m, 'sdpa')] + ([(size, m, 'written')] if m != 'none' else [])
    att = [k for k in trainers if k[1] != 'none']
    if att: log(f"SDPA's kernels in training ({att[0][1]}, {att[0][0]} px): {sdpa_kernels(trainers[att[0]])}")
    for size, m in att: log(f"same computation, {m} at {size} px, one step's gradients, SDPA vs written out: {same_gradients(m, size, a.batch, a.device)}")
    for (size, m, path) in variants:  # warm-up, two steps each
        with written_out(path == 'written'): ldm_step(trainers[size, m], 0); ldm_step(trainers[size, m], 1)
    wall, cpu, t0 = {v: [] for v in variants}, {v: [] for v in variants}, time.time()
    for r in range(a.reps):
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:
            with written_out(v[2] == 'written'):
                w, c = timed(lambda: ldm_step(trainers[v[:2]], 2 + r), a.device)
            wall[v].append(w); cpu[v].append(c)
    log(f"{a.reps} rounds in {time.time() - t0:.0f} s, order rotating; load avg now {os.getloadavg()[0]:.1f}; threads {torch.get_num_threads()}")
    mem = {}
    if a.memory:
        for v in variants:
            if a.quick and v[0] != max(sizes): continue
            mem[v] = run_child(__file__, dict(size=v[0], model=v[1], path=v[2], batch=a.batch, device=a.device, threads=torch.get_num_threads(),
                                              steps=1 if a.quick else 2))
    cuda = a.device != 'cpu'
    log(f"{'size':>4} {'model':<6} {'tokens':>14} {'params':>9} | {'SDPA s':>7} {'written s':>9} {'ratio':>6} {'CPU ratio':>9} | "
        f"{'SDPA MB':>8} {'written MB':>10}  (peak RSS; added over the built model){'  CUDA MB SDPA/written' if cuda else ''}")
    for size in sizes:
        for m in models:
            n = sum(p.numel() for p in trainers[size, m].task.unet.parameters())
            s, w = (size, m, 'sdpa'), (size, m, 'written')
            ms = statistics.median(wall[s])
            if m == 'none': row = f"{ms:>7.3f} {'-':>9} {'-':>6} {'-':>9}"
            else: row = (f"{ms:>7.3f} {statistics.median(wall[w]):>9.3f} {statistics.median(wall[w]) / ms:>6.2f} "
                         f"{statistics.median(cpu[w]) / statistics.median(cpu[s]):>9.2f}")
            def mb(v):
                r = mem.get(v)
                if not r: return '-'
                if 'error' in r: return 'failed'
                return f"{r['rss_peak_mb']:.0f} (+{r['rss_added_mb']:.0f})"
            cu = ''
            if cuda and mem.get(s) and 'cuda_peak_allocated_mb' in mem[s]:
                cu = f"  {mem[s]['cuda_peak_allocated_mb']:.0f}/{mem.get(w, {}).get('cuda_peak_allocated_mb', float('nan')):.0f}"
            log(f"{size:>4} {m:<6} {tokens(m, size):>14} {n:>9,} | {row} | {mb(s):>8} {mb(w) if m != 'none' else '-':>10}{cu}")
    if mem:
        r = next(iter(mem.values()))
        log(f"memory: {r.get('method', '?')}, each (size, model, path) alone in a fresh subprocess, {'1 step' if a.quick else '2 steps'} after a warm-up"
            + ('; --quick: only the largest size' if a.quick else ''))
    log("tokens: H·W that each self-attention sees, per level with attention, the middle block last")
    log.write(out, first)


if __name__ == '__main__':
    main()

"""Chapter 12's main run judged further, from its committed EMA UNet (no checkpoint needed): class accuracy and FID
against the guidance scale and the number of sampler steps, and the Classification Accuracy Score (the book's classifier
recipe trained on 1,000 generated digits per class, tested on MNIST's real test split) at chosen guidance scales.
Writes RUN/sweep.json; a run with only some of the parts keeps the others' earlier results.

    OMP_NUM_THREADS=2 python runs/ch12_eval.py [runs/ch12/eps] [--guidance 1,3,5 --steps 10,20,50] [--cas-guidance 1,2,3 [--cas-interval 0.6,1]]
"""
import argparse, json, time
from pathlib import Path
import torch
from sd_book.checkpoint import atomic_write
from sd_book.evaluate import cas, class_accuracy
from sd_book.first_stage import load_autoencoder
from sd_book.ldm import evaluate_ldm, fid_baseline, cached_latents
from sd_book.loading import load_unet
from sd_book.train import machine

def numbers(s: str, kind=float) -> list: return [kind(v) for v in s.split(',') if v]

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument('run', nargs='?', default='runs/ch12/eps', help='a `sd-book train ldm --out` folder with unet/ and eval.json')
p.add_argument('--guidance', default='1,3,5', help="guidance scales of the sweep ('' for no sweep)")
p.add_argument('--steps', default='10,20,50', help='sampler steps of the sweep')
p.add_argument('--per-class', type=int, default=100, help='digits per class at each (guidance, steps) point')
p.add_argument('--cas-guidance', default='3', help="guidance scales at which to measure the CAS, at the run's own step count ('' for none)")
p.add_argument('--cas-interval', default='0,1', help="guide only these fractions of the sampler's steps (start,stop; 0 is the noisiest) in the CAS sets")
p.add_argument('--cas-per-class', type=int, default=1000, help='generated digits per class for the CAS')
p.add_argument('--cas-reconstructions', action='store_true',
               help="also the CAS of the autoencoder's reconstructions of the real baseline's 10,000 digits: the ceiling the autoencoder sets")
a = p.parse_args()
torch.set_flush_denormal(True)
run = Path(a.run)
ev = json.loads((run / 'eval.json').read_text())
unet, vae = load_unet(run / 'unet'), load_autoencoder(ev['autoencoder'])
k0, sampler = ev['eval']['ema']['steps'], ev['eval']['ema']['sampler']
sampler = 'ddim' if sampler == 'flow_euler' else sampler  # (ignored for flow, which always samples with FlowMatchEuler)
f = run / 'sweep.json'
out = dict(run=str(run), objective=ev['objective'], sampler=sampler, machine=machine())  # what this call measures, merged into f at the end
if ws := numbers(a.guidance):
    t0 = time.perf_counter()
    out |= dict(per_class=a.per_class, fid_real_same_n=fid_baseline(10 * a.per_class), sweep=[])
    for w in ws:
        for k in numbers(a.steps, int):
            r = evaluate_ldm(unet, vae, ev['objective'], a.per_class, w, k, sampler, ev['size'])
            out['sweep'].append(r); print(f"guidance {w:g}, {k} steps: accuracy {r['class_accuracy']:.2%}, FID {r['fid']:.2f}", flush=True)
    out['sweep_seconds'] = round(time.perf_counter() - t0, 1)
def key(c: dict) -> tuple: return c['guidance'], tuple(c.get('guidance_interval', (0, 1)))
cases, interval = {}, tuple(numbers(a.cas_interval))
for w in numbers(a.cas_guidance):  # a fresh set (seed 1) at each scale; the classifier recipe trains on it
    t1 = time.perf_counter()
    r, x, labels = evaluate_ldm(unet, vae, ev['objective'], a.cas_per_class, w, k0, sampler, ev['size'], seed=1, return_images=True,
                                guidance_interval=interval)
    c = {k: r[k] for k in ('guidance', 'guidance_interval', 'steps', 'images', 'class_accuracy', 'fid') if k in r}
    cases[key(c)] = c | dict(accuracy=cas(x, labels), seconds=round(time.perf_counter() - t1, 1), machine=machine())
    print(f"CAS ({len(x):,} generated digits at guidance {w:g}, steps {interval} of {k0}): {cases[key(c)]['accuracy']:.2%}", flush=True)
if a.cas_reconstructions:  # the real baseline's digits (the first 1,000 of each class), through the autoencoder and back
    t1 = time.perf_counter()
    z, y = cached_latents(ev['autoencoder'], 'mnist', 'train', ev['size'])
    idx = torch.cat([torch.nonzero(y == k).flatten()[:1000] for k in range(10)])
    with torch.no_grad(): x = torch.cat([vae.decode(z[idx[i:i + 500]] / vae.cfg.scaling_factor).clamp(-1, 1) for i in range(0, len(idx), 500)])
    out['cas_reconstructions'] = dict(images=len(x), class_accuracy=class_accuracy(x, y[idx]), accuracy=cas(x, y[idx]),
                                      seconds=round(time.perf_counter() - t1, 1), machine=machine())
    print(f"CAS of {len(x):,} reconstructions of real digits: {out['cas_reconstructions']['accuracy']:.2%}", flush=True)
old = json.loads(f.read_text()) if f.exists() else {}  # read now: another call may have written since this one started
cases = {key(c): c for c in old.get('cas', [])} | cases
out = old | out | dict(cas=[cases[k] for k in sorted(cases)])
atomic_write(f, lambda t: Path(t).write_text(json.dumps(out, indent=2)))
print(f"{f}: {out['machine']}")

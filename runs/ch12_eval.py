"""Chapter 12's main run judged further, from its committed EMA UNet (no checkpoint needed): class accuracy and FID
against the guidance scale and the number of sampler steps, and the Classification Accuracy Score (the book's classifier
recipe trained on 1,000 generated digits per class, tested on MNIST's real test split). Writes RUN/sweep.json.

    OMP_NUM_THREADS=2 python runs/ch12_eval.py [runs/ch12/eps] [--per-class 100] [--cas-per-class 1000]
"""
import argparse, json, time
from pathlib import Path
import torch
from sd_book.checkpoint import atomic_write
from sd_book.evaluate import cas
from sd_book.first_stage import load_autoencoder
from sd_book.ldm import evaluate_ldm, fid_baseline
from sd_book.loading import load_unet
from sd_book.train import machine

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument('run', nargs='?', default='runs/ch12/eps', help='a `sd-book train ldm --out` folder with unet/ and eval.json')
p.add_argument('--guidance', default='1,2,3,5', help='guidance scales of the sweep')
p.add_argument('--steps', default='10,20,50', help='sampler steps of the sweep')
p.add_argument('--per-class', type=int, default=100, help='digits per class at each (guidance, steps) point')
p.add_argument('--cas-per-class', type=int, default=1000, help='generated digits per class for the CAS (0: skip it)')
a = p.parse_args()
torch.set_flush_denormal(True)
run = Path(a.run)
ev = json.loads((run / 'eval.json').read_text())
unet, vae = load_unet(run / 'unet'), load_autoencoder(ev['autoencoder'])
w0, k0, sampler = ev['eval']['ema']['guidance'], ev['eval']['ema']['steps'], ev['eval']['ema']['sampler']
sampler = 'ddim' if sampler == 'flow_euler' else sampler
out, t0 = dict(run=str(run), objective=ev['objective'], sampler=sampler, per_class=a.per_class, machine=machine()), time.perf_counter()
out['fid_real_same_n'] = fid_baseline(10 * a.per_class)
out['sweep'] = []
for w in map(float, a.guidance.split(',')):
    for k in map(int, a.steps.split(',')):
        r = evaluate_ldm(unet, vae, ev['objective'], a.per_class, w, k, sampler, ev['size'])
        out['sweep'].append(r); print(f"guidance {w:g}, {k} steps: accuracy {r['class_accuracy']:.2%}, FID {r['fid']:.2f}", flush=True)
if a.cas_per_class:  # a fresh set (seed 1) at the run's own guidance and steps; the classifier recipe trains on it
    t1 = time.perf_counter()
    r, x, labels = evaluate_ldm(unet, vae, ev['objective'], a.cas_per_class, w0, k0, sampler, ev['size'], seed=1, return_images=True)
    out['cas'] = dict(guidance=w0, steps=k0, images=len(x), class_accuracy=r['class_accuracy'], fid=r['fid'], accuracy=cas(x, labels),
                      seconds=round(time.perf_counter() - t1, 1))
    print(f"CAS ({len(x):,} generated digits at guidance {w0:g}, {k0} steps): {out['cas']['accuracy']:.2%}", flush=True)
out['seconds'] = round(time.perf_counter() - t0, 1)
atomic_write(run / 'sweep.json', lambda t: Path(t).write_text(json.dumps(out, indent=2)))
print(f"{run / 'sweep.json'}: {out['seconds']:.0f} s on {out['machine']}")

